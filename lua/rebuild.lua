--[[
  rebuild: replace a tag's whole state with the state Postgres recorded, and lift its
  fence. The caller reads Postgres (schedules, slot capacities, open holds and
  bookings) and passes it here; the replacement is one atomic step.

  KEYS[1..11] the department-day tag's keys, see includes/tag.lua
  ARGV[1]  tag
  ARGV[2]  seq     the tag's highest seq in Postgres: new events continue after it
  ARGV[3]  meta    JSON object of the tag's policy fields (hold_ttl_ms, max_hold_ms,
                   extend_ms, one_per_day, rerelease_min_ms, rerelease_max_ms, hospital,
                   department, date)
  ARGV[4]  schedules  JSON array of {id, status, release_ms, start_ms, end_ms,
                      cancel_deadline_ms, fee}
  ARGV[5]  slots      JSON array of {id, schedule, cap}
  ARGV[6]  holds      JSON array of hold records (state held or booked) as the scripts
                      keep them (an offer's with its entry)
  ARGV[7]  waitlist   JSON array of the waitlist entries still waiting or offered, as
                      the scripts keep them (includes/waitlist.lua); may be absent
  ARGV[8]  waitlist_seq  the highest join order given in the tag (new joins follow it)

  Returns {code, rem_total}
    0   OK                rem_total = units free after the rebuild
   -16  capacity_below_taken  a slot has more open holds and bookings than capacity:
                              Postgres itself is inconsistent; nothing was changed
   -20  invalid_argument
  Emits: store_rebuilt (with the seq it restarts from); the outbox restarts empty.
]]
--- @include "tag"
--- @include "codes"
--- @include "step"
--- @include "timers"
--- @include "holds"
--- @include "patient_holds"
--- @include "events"

local tag, seq = ARGV[1], tonumber(ARGV[2])
if tag == '' or not seq then
  return {E_INVALID_ARGUMENT, 0}
end
local meta = cjson.decode(ARGV[3])
local schedules = cjson.decode(ARGV[4])
local slots = cjson.decode(ARGV[5])
local holds = cjson.decode(ARGV[6])

local taken = {}
for _, rec in ipairs(holds) do
  taken[rec.slot] = (taken[rec.slot] or 0) + 1
end
for _, slot in ipairs(slots) do
  if (taken[slot.id] or 0) > slot.cap then
    return {E_CAPACITY_BELOW_TAKEN, 0}
  end
end

redis.call('DEL', K_META, K_SCHEDULES, K_SLOTS, K_HOLDS, K_PATIENTS, K_TIMERS, K_SLOT_TIMERS,
  K_OUTBOX, K_WAITLIST, K_WAITQ, K_OFFERS)
redis.call('HSET', K_META, 'tag', tag, 'seq', seq)
for name, value in pairs(meta) do
  redis.call('HSET', K_META, name, value)
end
for _, s in ipairs(schedules) do
  redis.call('HSET', K_SCHEDULES, s.id .. ':status', s.status, s.id .. ':release_ms', s.release_ms,
    s.id .. ':start_ms', s.start_ms, s.id .. ':end_ms', s.end_ms,
    s.id .. ':cancel_deadline_ms', s.cancel_deadline_ms, s.id .. ':fee', s.fee)
end
local free = 0
for _, slot in ipairs(slots) do
  redis.call('HSET', K_SLOTS, slot.id .. ':sched', slot.schedule, slot.id .. ':cap', slot.cap,
    slot.id .. ':rem', slot.cap, slot.id .. ':held', 0, slot.id .. ':booked', 0,
    slot.id .. ':wait', 0)
  free = free + slot.cap
end
for _, rec in ipairs(holds) do
  if rec.state == 'held' then
    redis.call('HINCRBY', K_SLOTS, rec.slot .. ':held', 1)
    add_timer(rec.slot, 'h', rec.id, rec.deadline)
  else
    redis.call('HINCRBY', K_SLOTS, rec.slot .. ':booked', 1)
  end
  redis.call('HINCRBY', K_SLOTS, rec.slot .. ':rem', -1)
  free = free - 1
  save_hold(rec)
  add_patient_hold(rec.patient, rec.id)
end
-- The waitlist's live entries, in their queues again (a doctor's-day entry in each of its
-- schedules'); an offer waits for the worker's settling again (settling is a replay
-- when it was settled before).
local entries = cjson.decode(ARGV[7] or '[]')
for _, rec in ipairs(entries) do
  redis.call('HSET', K_WAITLIST, rec.id, cjson.encode(rec))
  local field
  if rec.doctor and rec.doctor ~= '' then
    field = 'a|@' .. rec.doctor .. '|' .. rec.patient
  else
    field = 'a|' .. rec.schedule .. '|' .. rec.patient
  end
  redis.call('HSET', K_WAITLIST, field, rec.id)
  if rec.state == 'waiting' then
    local queues = {}
    if rec.day and rec.day ~= '' then
      for schedule in string.gmatch(rec.day, '%S+') do
        queues[#queues + 1] = schedule
      end
    else
      queues[1] = rec.schedule
    end
    for _, schedule in ipairs(queues) do
      redis.call('ZADD', K_WAITQ, 0, schedule .. '|' .. pad_due(rec.seq) .. '|' .. rec.id)
    end
  elseif tonumber(meta.offer_settle) == 1 then
    redis.call('ZADD', K_OFFERS, rec.offered, rec.hold)
  end
end
redis.call('HSET', K_META, 'waitlist_seq', tonumber(ARGV[8]) or 0)
emit(new_step(tonumber(redis.call('TIME')[1]) * 1000), 'store_rebuilt', {'from_seq', seq})
return {OK, free}
