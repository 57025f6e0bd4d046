"""AI replies through HTTP: place a hold of 5 credits, then settle it for 3, 64
connections over 10,000 users; replies (settles) per second beside spends per
second of the same ledger, in the same run."""

from __future__ import annotations

from typing import Any

from bench import wrk
from bench.databases import Server
from bench.processes import API_KEY, ledger_server, serving
from bench.throughput import WORKLOADS, prepare_events, wait_projected

_SCRIPT = """
local users = %(users)d
local prefix = "%(prefix)s"
local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer %(key)s",
}
local threads = {}
local queue = {}
settled = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(%(seed)d)
end

function request()
  local pending = table.remove(queue)
  if pending then
    return wrk.format("POST", "/v1/users/" .. pending[1] .. "/holds/" .. pending[2] .. "/settle",
      headers, '{"amount":3}')
  end
  local user = string.format("%%s%%05d", prefix, math.random(0, users - 1))
  return wrk.format("POST", "/v1/users/" .. user .. "/credits/holds", headers,
    '{"amount":5,"reason":"bench reply"}')
end

function response(status, headers, body)
  if status == 201 then
    local user = string.match(body, '"user_id":"([^"]+)"')
    local hold = string.match(body, '"id":"(hold_[0-9a-f]+)"')
    if user and hold then
      table.insert(queue, {user, hold})
    end
  elseif status == 200 then
    settled = settled + 1
  end
end

function done(summary, latency, requests)
  local counted = 0
  for _, thread in ipairs(threads) do
    counted = counted + (thread:get("settled") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    '%(mark)s{"requests":%%d,"duration_us":%%d,"connect_errors":%%d,"read_errors":%%d,' ..
    '"write_errors":%%d,"status_errors":%%d,"timeouts":%%d,"p50_us":%%d,"p90_us":%%d,' ..
    '"p99_us":%%d,"mean_us":%%.1f,"max_us":%%d,"counted":%%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, counted))
end
"""


def measure(server: Server, *, warmup: float, seconds: float) -> dict[str, Any]:
    workload = WORKLOADS[0]  # 10,000 users
    lua = _SCRIPT % {
        "users": workload.load.users,
        "prefix": workload.load.prefix,
        "key": API_KEY,
        "seed": 5,
        "mark": wrk.MARK,
    }
    with server.scratch("ledger_replies") as database:
        prepare_events(database, workload)
        with serving(ledger_server(database)) as served:
            wait_projected(database)
            wrk.run(served.url, workload.load, API_KEY, warmup, seed=2)
            spends = wrk.run(served.url, workload.load, API_KEY, seconds, seed=3)
            wrk.run(served.url, workload.load, API_KEY, warmup, lua=lua)
            replies = wrk.run(served.url, workload.load, API_KEY, seconds, lua=lua)
    replies_per_second = replies.counted / replies.seconds if replies.seconds else 0.0
    return {
        "spends": spends.as_dict(),
        "replies": {**replies.as_dict(), "replies_per_second": round(replies_per_second, 1)},
        "ratio": round(replies_per_second / spends.ok_per_second, 3)
        if spends.ok_per_second
        else None,
    }
