"""The operator console: a page for support and operators, over the JSON API only.

Static files shipped as package data (an HTML page, its scripts, one style
sheet), served without a key: only the page's own calls to /v1/ carry one."""

from api.console.router import router

__all__ = ["router"]
