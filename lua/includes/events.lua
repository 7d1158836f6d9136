--[[
  events: the tag's outbox. Every state change appends one event, stamped with the
  tag's next sequence number, its name, the step's clock and its request id.

  Provides:
    emit(step, event_type, fields, slot, counts) -> event_id, counts
    emit_hold(step, event_type, rec, fields, json, counts) -> event_id, json, counts
  Expects: tag (K_META, K_OUTBOX), slots (slot_counts), a step from step.lua (its
    clock, request id and tag name, which emit reads once and keeps in it).
]]
--- @include "tag"
--- @include "slots"
--- @include "step"

-- Appends one event, stamped with the tag's next sequence number, and returns its
-- stream id. `fields` is a flat list of name, value pairs; the slot's counts after
-- the change are added when `slot` is given, and then also returned (second value) so
-- that a reply built right after the step need not read them again. A step that
-- already knows the counts after its change passes them as `counts` (read otherwise).
local function emit(step, event_type, fields, slot, counts)
  local seq = redis.call('HINCRBY', K_META, 'seq', 1)
  local tag = step.tag
  if not tag then
    tag = redis.call('HGET', K_META, 'tag') or ''
    step.tag = tag
  end
  local entry = {'type', event_type, 'seq', seq, 'at', step.now, 'tag', tag}
  local n = 8
  local rid = step.rid
  if rid ~= '' then
    entry[9], entry[10], n = 'rid', rid, 10
  end
  for i = 1, #fields do
    entry[n + i] = fields[i]
  end
  n = n + #fields
  local c = nil
  if slot then
    c = counts or slot_counts(slot)
    entry[n + 1], entry[n + 2], entry[n + 3], entry[n + 4] = 'slot', slot, 'rem', c.rem
    entry[n + 5], entry[n + 6], entry[n + 7], entry[n + 8] = 'held', c.held, 'booked', c.booked
    entry[n + 9], entry[n + 10], entry[n + 11], entry[n + 12] = 'wait', c.wait, 'cap', c.cap
  end
  return redis.call('XADD', K_OUTBOX, '*', unpack(entry)), c
end

-- The event of a step on one hold: its ids, the step's own fields, and the whole hold
-- record after the step (so the persister writes the hold without reading Redis).
-- `json` is the record as save_hold just wrote it (encoded here when nil), `counts` the
-- slot's counts after the step when the step knows them (read here when nil).
-- Returns the event's stream id, the record's JSON and the slot's counts after the
-- step: exactly what hold_reply needs, so a step's reply reads and encodes nothing.
local function emit_hold(step, event_type, rec, fields, json, counts)
  json = json or cjson.encode(rec)
  local all = {'hold', rec.id, 'schedule', rec.schedule, 'account', rec.account,
    'patient', rec.patient}
  for i = 1, #fields do
    all[#all + 1] = fields[i]
  end
  all[#all + 1] = 'record'
  all[#all + 1] = json
  local event_id, c = emit(step, event_type, all, rec.slot, counts)
  return event_id, json, c
end
