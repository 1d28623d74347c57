#include "shard_schema.h"

namespace infrachat::shard {

const std::vector<pg::Migration>& ShardMigrations() {
  static const std::vector<pg::Migration> kMigrations = {
      {1, "channels, memberships, invites, messages", R"sql(
CREATE TABLE channels (
  id          bigserial PRIMARY KEY,
  name        text NOT NULL UNIQUE,
  visibility  smallint NOT NULL CHECK (visibility IN (1, 2)),
  topic       text NOT NULL DEFAULT '',
  created_by  bigint NOT NULL,
  -- The seq of the newest message. Incremented in the same transaction that inserts the
  -- message, under the row lock: the database, not memory, decides the next number.
  head_seq    bigint NOT NULL DEFAULT 0,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE memberships (
  channel_id     bigint NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
  user_id        bigint NOT NULL,
  username       text NOT NULL,
  joined_at      timestamptz NOT NULL DEFAULT now(),
  delivered_seq  bigint NOT NULL DEFAULT 0,
  read_seq       bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (channel_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id);
CREATE TABLE invites (
  channel_id  bigint NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
  user_id     bigint NOT NULL,
  invited_by  bigint NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (channel_id, user_id)
);
CREATE TABLE messages (
  channel_id     bigint NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
  seq            bigint NOT NULL CHECK (seq > 0),
  sender_id      bigint NOT NULL,
  sender         text NOT NULL,
  client_msg_id  text NOT NULL,
  body           text NOT NULL,
  sent_at_ms     bigint NOT NULL,
  PRIMARY KEY (channel_id, seq),
  -- Idempotent send: unique forever, not within a time window.
  UNIQUE (channel_id, sender_id, client_msg_id)
);
)sql"},
      {2, "shard leases", R"sql(
-- Liveness of the region's shard processes (docs/adr/0009): each renews its row every
-- heartbeat; a row past expires_at is out of placement. epoch fences a restarted or paused
-- process: a renewal names the epoch it holds.
CREATE TABLE shard_leases (
  shard_id    text PRIMARY KEY,
  address     text NOT NULL,
  epoch       bigint NOT NULL,
  expires_at  timestamptz NOT NULL
);
)sql"},
      {3, "messages without a per-row foreign key check", R"sql(
-- Every message is inserted by the statement that advances its channel's head_seq under the
-- channel's row lock (the group committer), so its channel exists by construction; the foreign
-- key's per-row check cost about a third of each batch's insert (docs/adr/0013). Channels are
-- never deleted; code that ever deletes one deletes its messages in the same transaction.
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_channel_id_fkey;
)sql"},
  };
  return kMigrations;
}

}  // namespace infrachat::shard
