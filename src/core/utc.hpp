// The current time as an ISO 8601 UTC stamp ("2026-12-04T18:30:00Z"), for files' created_utc.
#pragma once
#include <chrono>
#include <ctime>
#include <string>

namespace bupo {

inline std::string utc_now() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace bupo
