--[[
  step: the context of one step, passed to every helper that stamps events or frees
  units, in place of variables the includes would share and scripts overwrite.

  Provides:
    new_step(now, seed, request_id) -> step, a table of:
      now   the step's clock (ms), as the script read it (clock.lua)
      rid   the API request that caused this step ('' = none): stamped on every event
            ("rid") so the worker's handling of the same booking logs the same request
      tag   the tag's name stamped on every event: nil until read, then kept (events.lua
            reads it at most once a step; a script that read the meta hash anyway sets it)
      rng   the state of the step's random numbers (the anti-scalping delays): a
            Park-Miller generator seeded by the caller, so a step is deterministic and
            replayable (1 when the seed is not a number)
    next_random(step) -> n   the step's next random number, 1 .. 2^31 - 2
  Expects: nothing.
]]

local function new_step(now, seed, request_id)
  local rng = (tonumber(seed) or 1) % 2147483647
  if rng <= 0 then rng = 1 end
  return {now = now, rid = request_id or '', tag = nil, rng = rng}
end

-- Park-Miller: products stay below 2^53, so Lua's doubles are exact.
local function next_random(step)
  step.rng = (step.rng * 16807) % 2147483647
  return step.rng
end
