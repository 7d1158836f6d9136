--[[
  random: the deterministic random numbers of a step (the anti-scalping delays).

  Park-Miller generator: products stay below 2^53, so Lua's doubles are exact. The seed
  comes from the caller (ARGV), so a step is deterministic and replayable.

  Provides:
    seed_rng(seed)        start the sequence (1 when the seed is not a number)
    next_random() -> n    the next number, 1 .. 2^31 - 2
  Expects: nothing.
]]

local rng_state = 1
local function seed_rng(seed)
  rng_state = (tonumber(seed) or 1) % 2147483647
  if rng_state <= 0 then rng_state = 1 end
end
local function next_random()
  rng_state = (rng_state * 16807) % 2147483647
  return rng_state
end
