--[[
  gcra: rate limits by GCRA (the generic cell rate algorithm: a token bucket kept as one
  timestamp, its "theoretical arrival time"), over several buckets at once and
  all-or-nothing: a request is counted in every bucket only when every bucket allows it.

  Provides:
    take_rate_limits(now, key_base, arg_base, n)
      -> nil when allowed (and counted), {retry_after_ms, i, ...} naming the refusing
         buckets when refused (nothing counted), or false when an interval or burst is
         invalid
  Expects: bucket i (1..n) is KEYS[key_base + i], a string holding its arrival time (ms)
    that expires when the bucket is full again (idle callers cost no memory), with
    ARGV[arg_base + 2i - 1] = interval_ms (period / count, what one request "costs") and
    ARGV[arg_base + 2i] = burst (count, how many may arrive at once).
]]
local function take_rate_limits(now, key_base, arg_base, n)
  local new_tats = {}
  local refused = {0}
  for i = 1, n do
    local interval = tonumber(ARGV[arg_base + 2 * i - 1])
    local burst = tonumber(ARGV[arg_base + 2 * i])
    if not interval or not burst or interval <= 0 or burst < 1 then
      return false
    end
    local tat = math.max(tonumber(redis.call('GET', KEYS[key_base + i])) or now, now)
    local allow_at = tat + interval - burst * interval
    if now < allow_at then
      refused[1] = math.max(refused[1], math.ceil(allow_at - now))
      refused[#refused + 1] = i
    end
    new_tats[i] = tat + interval
  end
  if #refused > 1 then
    return refused
  end
  for i = 1, n do
    redis.call('SET', KEYS[key_base + i], new_tats[i], 'PX',
      math.max(1, math.ceil(new_tats[i] - now)))
  end
  return nil
end
