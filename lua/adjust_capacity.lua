--[[
  adjust_capacity: add units to a slot (加号) or take free units away.

  KEYS[1..11] the department-day tag's keys, see includes/tag.lua
  ARGV[1]  now_ms   logical clock in ms; 0 = the server's TIME
  ARGV[2]  slot_id
  ARGV[3]  delta    units to add (negative: to remove; only free units can go)

  Returns {code, event_id, rem, held, booked, wait, cap}   counts after the offers
    0   OK
   -17  store_fenced
   -12  slot_not_found
   -16  capacity_below_taken  fewer free units than asked to remove
   -20  invalid_argument
  Emits: capacity_adjusted (then waitlist_offered / waitlist_refused for each entry the
    added units went to or passed over).
]]
--- @include "tag"
--- @include "codes"
--- @include "clock"
--- @include "step"
--- @include "meta"
--- @include "slots"
--- @include "events"
--- @include "waitlist"

local step = new_step(now_ms(ARGV[1]))
local slot, delta = ARGV[2], tonumber(ARGV[3])
if slot == '' or not delta or delta ~= math.floor(delta) then
  return {E_INVALID_ARGUMENT, '', 0, 0, 0, 0, 0}
end
if is_fenced() then
  return {E_STORE_FENCED, '', 0, 0, 0, 0, 0}
end
if not redis.call('HGET', K_SLOTS, slot .. ':sched') then
  return {E_SLOT_NOT_FOUND, '', 0, 0, 0, 0, 0}
end
local c = slot_counts(slot)
if c.rem + delta < 0 then
  return {E_CAPACITY_BELOW_TAKEN, '', unpack(counts_array(c))}
end

redis.call('HINCRBY', K_SLOTS, slot .. ':cap', delta)
redis.call('HINCRBY', K_SLOTS, slot .. ':rem', delta)
local event_id = emit(step, 'capacity_adjusted', {'delta', delta}, slot)
if delta > 0 then
  offer_free_units(step, slot)
end
return {OK, event_id, unpack(counts_array(slot_counts(slot)))}
