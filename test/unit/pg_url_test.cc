// pg::WithConnectTimeout: the connect timeout that lets a multi-host URL move past a host that
// does not answer (docs/HA.md), added to both libpq connection string forms.
#include <catch2/catch.hpp>

#include "infrachat/storage/pg.h"

namespace infrachat::pg {
namespace {

TEST_CASE("WithConnectTimeout adds connect_timeout to URIs and keyword strings", "[pg]") {
  CHECK(WithConnectTimeout("postgresql://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write",
                           5) ==
        "postgresql://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write&connect_timeout=5");
  CHECK(WithConnectTimeout("postgres://h/db", 2) == "postgres://h/db?connect_timeout=2");
  CHECK(WithConnectTimeout("postgresql://h/db#x", 2) == "postgresql://h/db?connect_timeout=2#x");
  CHECK(WithConnectTimeout("host=/tmp/x port=5432 dbname=d", 3) ==
        "host=/tmp/x port=5432 dbname=d connect_timeout=3");
}

TEST_CASE("WithConnectTimeout keeps a timeout the URL sets, and an empty URL", "[pg]") {
  CHECK(WithConnectTimeout("postgresql://h/db?connect_timeout=9", 2) ==
        "postgresql://h/db?connect_timeout=9");
  CHECK(WithConnectTimeout("host=h connect_timeout=9", 2) == "host=h connect_timeout=9");
  CHECK(WithConnectTimeout("", 2).empty());
}

}  // namespace
}  // namespace infrachat::pg
