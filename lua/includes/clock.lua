--[[
  clock: the clock that judges deadlines: the Redis server's TIME of the tag's primary,
  unless the caller passes its own logical now (tests and replays pass theirs that way).

  Provides:
    now_ms(override) -> ms   `override` when it is a positive integer, else TIME in ms
  Expects: nothing.
]]
local function now_ms(override)
  local given = tonumber(override)
  if given and given > 0 then
    return given
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
