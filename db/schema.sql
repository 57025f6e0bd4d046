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
-- The table is created unqualified, so a rebuild can create it in a staging
-- schema; the enum types are shared by every generation of the table.

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
    free_credits        integer DEFAULT 10
        CONSTRAINT users_free_credits_check CHECK (free_credits IS NULL OR free_credits >= 0),
    free_chat_messages  integer DEFAULT 20
        CONSTRAINT users_free_chat_messages_check
        CHECK (free_chat_messages IS NULL OR free_chat_messages >= 0),
    version             bigint NOT NULL,      -- events in the user's stream
    position            bigint NOT NULL,      -- global position of the last one applied
    updated_at          timestamptz NOT NULL  -- when that event was recorded
);
