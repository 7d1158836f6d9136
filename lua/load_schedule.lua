--[[
  load_schedule: create or update one schedule, its slots' capacities and the tag's
  policy. A new slot starts with remaining = capacity; an existing slot's remaining
  moves by the change in capacity. Schedule status is left alone (suspend / reopen).

  A load never starts counts from scratch on a tag whose history Redis has lost: when
  the tag's seq is below the highest seq Postgres recorded for it (ARGV[18]; a node
  restarted without its data, a failover that dropped writes), the tag is fenced here
  and the load refused, exactly as the fence monitor would (see fence.lua).

  KEYS[1..11] the department-day tag's keys, see includes/tag.lua
  ARGV[1]  now_ms              logical clock in ms; 0 = the server's TIME
  ARGV[2]  tag                 the tag's name, stamped on every event
  ARGV[3]  schedule_id
  ARGV[4]  release_ms          when its slots may first be reserved (放号时间)
  ARGV[5]  start_ms            session start: no reserve at or after it
  ARGV[6]  end_ms              session end
  ARGV[7]  cancel_deadline_ms  bookings may be cancelled until then
  ARGV[8]  fee                 registration fee in fen
  ARGV[9]  hold_ttl_ms         policy: a hold's payment deadline after reserve
  ARGV[10] max_hold_ms         policy: hard maximum lifetime of a hold
  ARGV[11] extend_ms           policy: how far extend pushes the deadline
  ARGV[12] one_per_day         policy: 1 = one open hold or booking per patient per tag
  ARGV[13] rerelease_min_ms    policy: anti-scalping delay window for freed units;
  ARGV[14] rerelease_max_ms            0, 0 = freed units return at once
  ARGV[15] hospital_id
  ARGV[16] department_id
  ARGV[17] date                YYYY-MM-DD
  ARGV[18] postgres_seq        the highest seq Postgres recorded for the tag (0: none)
  ARGV[19] slot_count n, then ARGV[20..19+2n] slot_id, capacity pairs
  ARGV[20+2n] offer_ttl_ms     policy: a waitlist offer's payment deadline
  ARGV[21+2n] offer_settle     policy: 1 = offers wait for the worker's check of the
                               rules on the patient's tag (blacklist, at most N open)

  Returns {code, event_id, extra}
    0   OK
   -17  store_fenced            fenced before, or fenced now (Redis behind Postgres)
   -21  slot_schedule_mismatch  extra = slot that belongs to another schedule
   -16  capacity_below_taken    extra = slot whose held + booked + waiting exceed it
   -20  invalid_argument        extra = which
  Emits: schedule_loaded (with the slots and capacities as JSON); then, when capacity
    grew on a schedule with a waitlist, waitlist_offered / waitlist_refused.
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
local tag, schedule = ARGV[2], ARGV[3]
local numbers = {}
for _, i in ipairs({4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 18}) do
  numbers[i] = tonumber(ARGV[i])
  if not numbers[i] or numbers[i] < 0 or numbers[i] ~= math.floor(numbers[i]) then
    return {E_INVALID_ARGUMENT, '', 'argv' .. i}
  end
end
local slot_count = tonumber(ARGV[19])
if tag == '' or schedule == '' or not slot_count or #ARGV ~= 21 + 2 * slot_count then
  return {E_INVALID_ARGUMENT, '', 'slots'}
end
local offer_ttl = tonumber(ARGV[20 + 2 * slot_count])
local offer_settle = tonumber(ARGV[21 + 2 * slot_count])
if not offer_ttl or offer_ttl <= 0 or (offer_settle ~= 0 and offer_settle ~= 1) then
  return {E_INVALID_ARGUMENT, '', 'offer'}
end
if is_fenced() then
  return {E_STORE_FENCED, '', ''}
end
if (tonumber(redis.call('HGET', K_META, 'seq')) or 0) < numbers[18] then
  redis.call('HSET', K_META, 'fenced', '1', 'tag', tag)
  return {E_STORE_FENCED, '', 'behind'}
end

local caps = {}
for i = 0, slot_count - 1 do
  local slot, cap = ARGV[20 + 2 * i], tonumber(ARGV[21 + 2 * i])
  if slot == '' or not cap or cap < 0 or cap ~= math.floor(cap) then
    return {E_INVALID_ARGUMENT, '', 'capacity'}
  end
  local owner = redis.call('HGET', K_SLOTS, slot .. ':sched')
  if owner and owner ~= schedule then
    return {E_SLOT_SCHEDULE_MISMATCH, '', slot}
  end
  if owner then
    local c = slot_counts(slot)
    if cap < c.held + c.booked + c.wait then
      return {E_CAPACITY_BELOW_TAKEN, '', slot}
    end
  end
  caps[#caps + 1] = {slot, cap}
end

redis.call('HSET', K_META, 'tag', tag, 'hold_ttl_ms', numbers[9], 'max_hold_ms', numbers[10],
  'extend_ms', numbers[11], 'one_per_day', numbers[12], 'rerelease_min_ms', numbers[13],
  'rerelease_max_ms', numbers[14], 'hospital', ARGV[15], 'department', ARGV[16],
  'date', ARGV[17], 'offer_ttl_ms', offer_ttl, 'offer_settle', offer_settle)
redis.call('HSETNX', K_SCHEDULES, schedule .. ':status', 'open')
redis.call('HSET', K_SCHEDULES, schedule .. ':release_ms', numbers[4],
  schedule .. ':start_ms', numbers[5], schedule .. ':end_ms', numbers[6],
  schedule .. ':cancel_deadline_ms', numbers[7], schedule .. ':fee', numbers[8])
local listed = {}
local known = {}
for _, slot in ipairs(schedule_slots(schedule)) do
  known[slot] = true
end
for _, pair in ipairs(caps) do
  local slot, cap = pair[1], pair[2]
  local old = tonumber(redis.call('HGET', K_SLOTS, slot .. ':cap'))
  if old then
    redis.call('HINCRBY', K_SLOTS, slot .. ':rem', cap - old)
  else
    redis.call('HSET', K_SLOTS, slot .. ':sched', schedule, slot .. ':rem', cap,
      slot .. ':held', 0, slot .. ':booked', 0, slot .. ':wait', 0)
  end
  redis.call('HSET', K_SLOTS, slot .. ':cap', cap)
  listed[slot] = cap
  known[slot] = true
end
-- The schedule's slots, for the steps that offer its free units to its waitlist.
local all_slots = {}
for slot in pairs(known) do
  all_slots[#all_slots + 1] = slot
end
table.sort(all_slots)
redis.call('HSET', K_SCHEDULES, schedule .. ':slots', table.concat(all_slots, ' '))
local event_id = emit(step, 'schedule_loaded', {
  'schedule', schedule, 'release_ms', numbers[4], 'start_ms', numbers[5],
  'end_ms', numbers[6], 'cancel_deadline_ms', numbers[7], 'fee', numbers[8],
  'status', redis.call('HGET', K_SCHEDULES, schedule .. ':status'), 'slots', cjson.encode(listed),
})
for _, pair in ipairs(caps) do
  offer_free_units(step, pair[1])
end
return {OK, event_id, ''}
