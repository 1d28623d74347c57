#include "auth_schema.h"

namespace infrachat::auth {

const std::vector<pg::Migration>& AuthMigrations() {
  static const std::vector<pg::Migration> migrations = {
      {1, "users", R"sql(
CREATE TABLE users (
  id            bigserial PRIMARY KEY,
  username      text NOT NULL UNIQUE,
  display_name  text NOT NULL,
  password_hash text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now()
);
)sql"},
      {2, "sessions and rotated refresh tokens", R"sql(
CREATE TABLE sessions (
  id            text PRIMARY KEY,
  user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  device_id     text NOT NULL DEFAULT '',
  refresh_hash  bytea NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  expires_at    timestamptz NOT NULL,
  rotated_at    timestamptz,
  revoked_at    timestamptz,
  revoke_reason text
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
-- Hashes of refresh secrets already rotated away: presenting one is token reuse.
CREATE TABLE session_rotated_refresh (
  session_id   text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
  refresh_hash bytea NOT NULL,
  rotated_at   timestamptz NOT NULL,
  PRIMARY KEY (session_id, refresh_hash)
);
)sql"},
      {3, "signing_keys", R"sql(
CREATE TABLE signing_keys (
  kid         text PRIMARY KEY,
  algorithm   text NOT NULL DEFAULT 'ES256',
  private_pem text NOT NULL,
  public_pem  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
)sql"},
  };
  return migrations;
}

}  // namespace infrachat::auth
