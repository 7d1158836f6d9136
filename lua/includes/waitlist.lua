--[[
  waitlist: the tag's 候补 waitlists (one per schedule) and the offers made from them.
  A unit freed on a schedule whose waitlist has patients is offered to the first of them
  in the very step that frees it: a hold on their behalf with its own payment deadline
  (the tag's offer_ttl_ms). Each entry gets at most one offer; an offer that ends unpaid
  (lapsed, declined, refused) ends its entry, and its unit goes to the next.

  An entry (JSON in K_WAITLIST under its id): id, schedule, account, patient, channel,
  seq (the tag's join order), created, state, hold (the offer's hold id, fixed at join),
  slot (the offered unit's slot), offered, ended (ms), reason. States: waiting, offered,
  then one of taken (the offer was paid), lapsed (its deadline passed), declined (the
  patient gave the offer back), refused (a patient rule refused the offer), left.

  A doctor's-day entry (any window of a doctor's day) also has doctor and day (the
  day's schedules, space-separated): it waits in each of those schedules' queues under
  its one join seq, so a unit freed on any of them reaches it in join order among that
  schedule's own entries; offered, it leaves every queue and its schedule becomes the
  offered unit's.

  Provides:
    load_entry(id) -> rec or nil
    save_entry(rec) -> json
    active_field(schedule, patient) -> the K_WAITLIST field naming the active entry
    day_field(doctor, patient) -> the field naming a doctor's-day active entry
    entry_active_field(rec) -> the entry's own active field
    queue_member(rec) -> the entry's K_WAITQ member in its schedule's queue
    add_to_queues(rec) / remove_from_queues(rec)   every queue it waits in
    schedule_slots(schedule) -> {slot, ...}   the schedule's slots in the tag
    waiting_position(rec) -> n               1 = next to be offered
    end_entry(step, rec, state, reason) -> event_id   a waiting or offered entry ends
    end_offer_entry(step, hold_rec, hold_state) an offer hold ended: its entry ends
    take_offer_entry(step, hold_rec)         an offer hold was paid: its entry is taken
    offer_free_units(step, slot) -> offers made   the slot's free units to its
                                             schedule's waitlist, in join order, while
                                             the schedule is open, released, not
                                             started and has no waiting room still
                                             admitting (at most MAX_PASSES entries a
                                             call)
  Expects: tag, meta (policy_number), a step from step.lua, schedules, slots, timers,
    holds, patient_holds, events.
]]
--- @include "tag"
--- @include "meta"
--- @include "step"
--- @include "schedules"
--- @include "slots"
--- @include "timers"
--- @include "holds"
--- @include "patient_holds"
--- @include "events"

-- An offer's payment deadline when the tag's policy has none (30 min).
local DEFAULT_OFFER_TTL_MS = 1800000
-- Entries looked at per call: a long script blocks all of Redis. A unit left free
-- after this many passed-over entries is sold by reserve or offered by the next step.
local MAX_PASSES = 16
-- The event of each way an entry ends.
local EVENT_FOR_ENTRY = {
  taken = 'waitlist_taken', lapsed = 'waitlist_lapsed', declined = 'waitlist_declined',
  refused = 'waitlist_refused', left = 'waitlist_left',
}

local function load_entry(entry_id)
  local raw = redis.call('HGET', K_WAITLIST, entry_id)
  if not raw then
    return nil
  end
  return cjson.decode(raw)
end

local function save_entry(rec)
  local json = cjson.encode(rec)
  redis.call('HSET', K_WAITLIST, rec.id, json)
  return json
end

local function active_field(schedule, patient)
  return 'a|' .. schedule .. '|' .. patient
end

local function day_field(doctor, patient)
  -- "@" never starts a schedule id: a doctor's day has a field of its own.
  return 'a|@' .. doctor .. '|' .. patient
end

local function entry_active_field(rec)
  if rec.doctor and rec.doctor ~= '' then
    return day_field(rec.doctor, rec.patient)
  end
  return active_field(rec.schedule, rec.patient)
end

local function member_in(rec, schedule)
  return schedule .. '|' .. pad_due(rec.seq) .. '|' .. rec.id
end

local function queue_member(rec)
  return member_in(rec, rec.schedule)
end

-- The schedules whose queues the entry waits in.
local function entry_schedules(rec)
  if rec.day and rec.day ~= '' then
    local list = {}
    for schedule in string.gmatch(rec.day, '%S+') do
      list[#list + 1] = schedule
    end
    return list
  end
  return {rec.schedule}
end

local function add_to_queues(rec)
  for _, schedule in ipairs(entry_schedules(rec)) do
    redis.call('ZADD', K_WAITQ, 0, member_in(rec, schedule))
  end
end

local function remove_from_queues(rec)
  for _, schedule in ipairs(entry_schedules(rec)) do
    redis.call('ZREM', K_WAITQ, member_in(rec, schedule))
  end
end

-- A schedule's waiting entries sort between "<schedule>|" and "<schedule>}": ids never
-- hold "|" or "}", and "}" sorts right after "|".
local function queue_bounds(schedule)
  return '[' .. schedule .. '|', '(' .. schedule .. '}'
end

local function schedule_slots(schedule)
  local listed = redis.call('HGET', K_SCHEDULES, schedule .. ':slots')
  local slots = {}
  if listed then
    for slot in string.gmatch(listed, '%S+') do
      slots[#slots + 1] = slot
    end
    return slots
  end
  -- Loaded before load_schedule listed its slots: the tag's slots, bounded by the tag.
  local flat = redis.call('HGETALL', K_SLOTS)
  for i = 1, #flat, 2 do
    local slot = string.match(flat[i], '^(.*):sched$')
    if slot and flat[i + 1] == schedule then
      slots[#slots + 1] = slot
    end
  end
  table.sort(slots)
  return slots
end

-- The best of its places (a doctor's-day entry waits in several queues).
local function waiting_position(rec)
  local best
  for _, schedule in ipairs(entry_schedules(rec)) do
    local lo = queue_bounds(schedule)
    local n = redis.call('ZLEXCOUNT', K_WAITQ, lo, '(' .. member_in(rec, schedule)) + 1
    if not best or n < best then
      best = n
    end
  end
  return best
end

local function end_entry(step, rec, state, reason)
  if rec.state == 'waiting' then
    remove_from_queues(rec)
  end
  local field = entry_active_field(rec)
  if redis.call('HGET', K_WAITLIST, field) == rec.id then
    redis.call('HDEL', K_WAITLIST, field)
  end
  rec.state = state
  rec.ended = step.now
  rec.reason = reason
  local json = save_entry(rec)
  return emit(step, EVENT_FOR_ENTRY[state], {'entry', rec.id, 'schedule', rec.schedule,
    'account', rec.account, 'patient', rec.patient, 'offer_hold', rec.hold, 'reason', reason,
    'entry_record', json})
end

-- An offer hold ended unpaid (expired: lapsed; released: declined); a booking that
-- came from an offer and is cancelled later leaves its entry taken.
local function end_offer_entry(step, hold_rec, hold_state)
  redis.call('ZREM', K_OFFERS, hold_rec.id)
  local rec = load_entry(hold_rec.entry)
  if not rec or rec.state ~= 'offered' then
    return
  end
  if hold_state == 'expired' then
    end_entry(step, rec, 'lapsed', 'deadline')
  elseif hold_state == 'released' then
    end_entry(step, rec, 'declined', hold_rec.reason)
  end
end

local function take_offer_entry(step, hold_rec)
  local rec = load_entry(hold_rec.entry)
  if rec and rec.state == 'offered' then
    end_entry(step, rec, 'taken', 'paid')
  end
end

-- Whether the patient has an open hold or booking in the tag (the one-per-day rule).
local function holds_open(patient, now)
  for _, id in ipairs(patient_holds(patient)) do
    local other = load_hold(id)
    if other and is_open(other, now) then
      return true
    end
  end
  return false
end

-- Makes the offer: one free unit of `slot` becomes a hold for the entry's patient.
local function make_offer(step, entry, slot, sched)
  local now = step.now
  local ttl = policy_number('offer_ttl_ms')
  if ttl <= 0 then
    ttl = DEFAULT_OFFER_TTL_MS
  end
  local rec = {
    id = entry.hold, slot = slot, schedule = entry.schedule, account = entry.account,
    patient = entry.patient, channel = entry.channel, fp = '', amount = sched.fee,
    created = now, deadline = now + ttl, extended = 0, state = 'held', payment_ref = '',
    confirmed = 0, ended = 0, reason = '', entry = entry.id,
  }
  redis.call('HINCRBY', K_SLOTS, slot .. ':rem', -1)
  redis.call('HINCRBY', K_SLOTS, slot .. ':held', 1)
  local json = save_hold(rec)
  add_patient_hold(rec.patient, rec.id)
  add_timer(slot, 'h', rec.id, rec.deadline)
  if policy_number('offer_settle') == 1 then
    -- Rules on the patient's own tag are the worker's to check (a two-step, as reserve's).
    redis.call('ZADD', K_OFFERS, now, rec.id)
  end
  entry.state = 'offered'
  entry.slot = slot
  entry.offered = now
  local entry_json = save_entry(entry)
  emit_hold(step, 'waitlist_offered', rec, {'entry', entry.id, 'deadline', rec.deadline,
    'amount', rec.amount, 'entry_record', entry_json}, json)
end

local function offer_free_units(step, slot)
  local schedule = redis.call('HGET', K_SLOTS, slot .. ':sched')
  if not schedule then
    return 0
  end
  local lo, hi = queue_bounds(schedule)
  -- The common case, nobody waiting, costs one read.
  if #redis.call('ZRANGEBYLEX', K_WAITQ, lo, hi, 'LIMIT', 0, 1) == 0 then
    return 0
  end
  local sched = schedule_fields(schedule)
  -- A queued release's waiting room has its units first, until it is sold out.
  if not sched or sched.status ~= 'open' or step.now < sched.release_ms
    or step.now >= sched.start_ms or sched.room then
    return 0
  end
  local one_per_day = policy_number('one_per_day') == 1
  local offers = 0
  for _ = 1, MAX_PASSES do
    if (tonumber(redis.call('HGET', K_SLOTS, slot .. ':rem')) or 0) <= 0 then
      break
    end
    local head = redis.call('ZRANGEBYLEX', K_WAITQ, lo, hi, 'LIMIT', 0, 1)
    if #head == 0 then
      break
    end
    local entry = load_entry(string.match(head[1], '|([^|]+)$'))
    if not entry or entry.state ~= 'waiting' then
      redis.call('ZREM', K_WAITQ, head[1])  -- a stale member: no entry waits there
    elseif one_per_day and holds_open(entry.patient, step.now) then
      end_entry(step, entry, 'refused', 'one_per_day')
    elseif load_hold(entry.hold) then
      end_entry(step, entry, 'refused', 'hold_exists')  -- never expected: ids are derived
    else
      remove_from_queues(entry)
      entry.schedule = schedule  -- a doctor's-day entry: the window offered
      make_offer(step, entry, slot, sched)
      offers = offers + 1
    end
  end
  return offers
end
