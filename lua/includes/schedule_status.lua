--[[
  schedule_status: move a schedule to a status, idempotently (suspend.lua, reopen.lua).

  Provides:
    set_schedule_status(step, schedule, status, event_type, reason) -> {code, event_id}
      OK with the event, REPLAY if it already had that status, E_SCHEDULE_NOT_FOUND
  Expects: tag (K_SCHEDULES), codes, a step from step.lua, events (emit).
]]
--- @include "tag"
--- @include "codes"
--- @include "events"

local function set_schedule_status(step, schedule, status, event_type, reason)
  local current = redis.call('HGET', K_SCHEDULES, schedule .. ':status')
  if not current then
    return {E_SCHEDULE_NOT_FOUND, ''}
  end
  if current == status then
    return {REPLAY, ''}
  end
  redis.call('HSET', K_SCHEDULES, schedule .. ':status', status)
  return {OK, emit(step, event_type, {'schedule', schedule, 'reason', reason})}
end
