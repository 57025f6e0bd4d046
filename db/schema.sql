-- The projected users table: one row per user, as the projector folds their events.
--
-- Written only by the projector, in the same transaction as its tracking
-- position, so each event is applied exactly once. Never edit rows by hand:
-- `ledger audit` would report the difference, and `ledger rebuild` undoes it.
--
-- Changing this file changes the projection's version: on its next start the
-- projector builds a fresh table from the event history beside the live one
-- and swaps it in (see "Changing the users table" in the README).
--
-- The tables are created unqualified, so a rebuild can create them in a
-- staging schema; the enum types are shared by every generation of them.

DO $$ BEGIN
    CREATE TYPE public.user_level AS ENUM ('free', 'basic', 'pro', 'paid');
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

DO $$ BEGIN
    CREATE TYPE public.renewal_period AS ENUM ('monthly', 'lifetime');
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

-- The types exist already in a database that has run this file before: a new
-- value needs its own line here (the CREATE above only runs the first time).
ALTER TYPE public.user_level ADD VALUE IF NOT EXISTS 'free';
ALTER TYPE public.user_level ADD VALUE IF NOT EXISTS 'basic';
ALTER TYPE public.user_level ADD VALUE IF NOT EXISTS 'pro';
ALTER TYPE public.user_level ADD VALUE IF NOT EXISTS 'paid';
ALTER TYPE public.renewal_period ADD VALUE IF NOT EXISTS 'monthly';
ALTER TYPE public.renewal_period ADD VALUE IF NOT EXISTS 'lifetime';

CREATE TABLE IF NOT EXISTS users (
    id                  text PRIMARY KEY,
    level               public.user_level NOT NULL DEFAULT 'free',
    renewal_period      public.renewal_period,
    -- What is available: granted, less spent, expired and held.
    free_credits        integer DEFAULT 10
        CONSTRAINT users_free_credits_check CHECK (free_credits IS NULL OR free_credits >= 0),
    free_chat_messages  integer DEFAULT 20
        CONSTRAINT users_free_chat_messages_check
        CHECK (free_chat_messages IS NULL OR free_chat_messages >= 0),
    -- What open holds reserve.
    free_credits_held   integer NOT NULL DEFAULT 0
        CONSTRAINT users_free_credits_held_check CHECK (free_credits_held >= 0),
    free_chat_messages_held integer NOT NULL DEFAULT 0
        CONSTRAINT users_free_chat_messages_held_check CHECK (free_chat_messages_held >= 0),
    -- What expires next, and when (NULL when nothing will).
    free_credits_next_expiry_at          timestamptz,
    free_credits_next_expiry_amount      integer,
    free_chat_messages_next_expiry_at    timestamptz,
    free_chat_messages_next_expiry_amount integer,
    version             bigint NOT NULL,      -- events in the user's stream
    position            bigint NOT NULL,      -- global position of the last one applied
    updated_at          timestamptz NOT NULL, -- when that event was recorded
    -- The first instant at which time alone changes the user (a hold or a
    -- grant expiring, an allowance's next period): where the expiry worker looks.
    next_due_at         timestamptz,
    -- The whole state the fold left (its grants, holds and allowances), which
    -- the projector folds the user's next events onto (NULL in a row not
    -- written by the projector: its state is read from its other columns).
    fold_state          jsonb
);

CREATE INDEX IF NOT EXISTS users_next_due_at ON users (next_due_at)
    WHERE next_due_at IS NOT NULL;

-- Every grant (lot) of every user, as the fold leaves it: what remains, is
-- held, was spent, expired or was clawed back.
CREATE TABLE IF NOT EXISTS grants (
    user_id     text NOT NULL,
    id          text NOT NULL,
    balance     text NOT NULL,
    amount      integer NOT NULL CHECK (amount >= 0),
    remaining   integer NOT NULL CHECK (remaining >= 0),
    held        integer NOT NULL CHECK (held >= 0),
    spent       integer NOT NULL CHECK (spent >= 0),
    expired     integer NOT NULL CHECK (expired >= 0),
    -- Taken back by the refunds and disputes of the purchase that made it.
    clawed_back integer NOT NULL DEFAULT 0 CHECK (clawed_back >= 0),
    priority    integer NOT NULL,
    expires_at  timestamptz,
    granted_at  timestamptz NOT NULL,
    source      text NOT NULL,
    reason      text,
    status      text NOT NULL,
    position    bigint NOT NULL,  -- of the event that made it
    PRIMARY KEY (user_id, id),
    CHECK (remaining + held + spent + expired + clawed_back = amount)
);

CREATE INDEX IF NOT EXISTS grants_by_position ON grants (user_id, position);
