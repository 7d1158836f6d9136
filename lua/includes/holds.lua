--[[
  holds: a hold record (a hold, or the booking it became) in the tag's holds hash, and
  the reply of a step on one.

  Provides:
    load_hold(hold_id) -> rec or nil
    save_hold(rec) -> json         writes the record, returns the JSON written
    is_open(rec, now) -> bool      booked, or held and not past its deadline
    hold_reply(code, event_id, rec, extra, json, counts)
                -> {code, event_id, hold_json, rem, held, booked, wait, cap, extra}
  Expects: tag (K_HOLDS), slots (slot_counts).
]]
--- @include "tag"
--- @include "slots"

local function load_hold(hold_id)
  local raw = redis.call('HGET', K_HOLDS, hold_id)
  if not raw then
    return nil
  end
  return cjson.decode(raw)
end

-- Writes the hold record and returns the JSON written: the step's event and reply
-- carry the same text, and encoding it once is a measurable share of a step's cost.
local function save_hold(rec)
  local json = cjson.encode(rec)
  redis.call('HSET', K_HOLDS, rec.id, json)
  return json
end

-- Is this hold or booking still open at `now`? A held unit past its deadline is not,
-- even before any sweep has run (logical expiry).
local function is_open(rec, now)
  return rec.state == 'booked' or (rec.state == 'held' and rec.deadline > now)
end

-- A step's reply. `json` and `counts`, when given, are the record's JSON and the slot's
-- counts as the step's event carried them (emit_hold's second and third values); a
-- reply without a step (a refusal, a replay) encodes and reads them here.
local function hold_reply(code, event_id, rec, extra, json, counts)
  local c = counts or (rec and slot_counts(rec.slot))
    or {rem = 0, held = 0, booked = 0, wait = 0, cap = 0}
  return {code, event_id or '', json or (rec and cjson.encode(rec)) or '', c.rem, c.held,
    c.booked, c.wait, c.cap, extra or ''}
end
