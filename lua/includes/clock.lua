-- The clock that judges deadlines: the caller's logical now_ms when it is a positive
-- integer (tests, replays), otherwise the Redis server's TIME.
local function now_ms(override)
  local given = tonumber(override)
  if given and given > 0 then
    return given
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
