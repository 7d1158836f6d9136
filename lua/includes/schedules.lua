--[[
  schedules: a schedule's fields, as the checks of a step need them.

  Provides:
    schedule_fields(schedule) -> {status, release_ms, start_ms, cancel_deadline_ms, fee,
                                 room}
                                 or nil when the tag has no such schedule; room = the
                                 release whose waiting room governs it (nil: none)
  Expects: tag (K_SCHEDULES).
]]
--- @include "tag"

local function schedule_fields(schedule)
  local v = redis.call('HMGET', K_SCHEDULES, schedule .. ':status', schedule .. ':release_ms',
    schedule .. ':start_ms', schedule .. ':cancel_deadline_ms', schedule .. ':fee',
    schedule .. ':room')
  if not v[1] then
    return nil
  end
  return {
    status = v[1], release_ms = tonumber(v[2]), start_ms = tonumber(v[3]),
    cancel_deadline_ms = tonumber(v[4]), fee = tonumber(v[5]), room = v[6] or nil,
  }
end
