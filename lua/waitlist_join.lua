--[[
  waitlist_join: put a patient on a sold-out schedule's 候补 waitlist, behind everyone
  who joined before. A unit freed later on the schedule is offered to the first waiting
  patient by the step that frees it (includes/waitlist.lua).

  KEYS[1..11] the department-day tag's keys, see includes/tag.lua
  ARGV[1]  now_ms            logical clock in ms; 0 = the server's TIME
  ARGV[2]  entry_id          derived from (account, idempotency key, tag) by the caller,
                             so a retry with the same key lands on the same entry
  ARGV[3]  schedule_id
  ARGV[4]  account_id
  ARGV[5]  patient_id
  ARGV[6]  channel           e.g. wechat, app, web (the offer's hold keeps it)
  ARGV[7]  offer_hold_id     the hold id the entry's offer will have (derived from the entry)
  ARGV[8]  token_deadline_ms when > 0, the patient tag's pending token for the entry (at
                             most N entries per patient) is only valid until then
  ARGV[9]  request_id        the API request's id, stamped on the event ("rid"); may be ""
  ARGV[10] day_schedules     "" for one schedule's waitlist; else a doctor's day: the
                             doctor's schedules that day in this tag (space-separated,
                             ARGV[3] among them). The entry waits on those that take
                             entries now (open, released, not started, no room
                             admitting); refused as the first of them is when none does
  ARGV[11] doctor_id         with ARGV[10]: the doctor (one active day entry per doctor
                             and patient)

  Returns {code, event_id, entry_json, position, extra}
    0   OK                      a new waiting entry; position 1 = next to be offered
    1   REPLAY                  the key's entry, or the patient's active entry on this
                                schedule (waiting: with its position; else position 0)
   -9   idempotency_key_reused  the key was used for another schedule, patient or account
   -17  store_fenced
   -11  schedule_not_found
   -2   schedule_suspended
   -1   not_released            extra = release time (ms)
   -3   schedule_past
   -40  admission_required      a queued release's waiting room still admits to the
                                schedule: join the room (extra = the release)
   -18  patient_token_expired   the patient tag's token ran out before this step
   -5   patient_rule            extra = "one_per_day": an open hold or booking in the tag
   -31  waitlist_units_free     a slot of the schedule has a free unit: reserve it
   -20  invalid_argument
  Emits: waitlist_joined.
]]
--- @include "tag"
--- @include "codes"
--- @include "clock"
--- @include "step"
--- @include "meta"
--- @include "schedules"
--- @include "slots"
--- @include "holds"
--- @include "events"
--- @include "waitlist"

local step = new_step(now_ms(ARGV[1]), 1, ARGV[9])
local now = step.now
local entry_id, schedule, account, patient = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local channel, offer_hold = ARGV[6], ARGV[7]
local token_deadline = tonumber(ARGV[8])
local day, doctor = ARGV[10] or '', ARGV[11] or ''
if entry_id == '' or schedule == '' or account == '' or patient == '' or channel == ''
  or offer_hold == '' or not token_deadline or (day ~= '' and doctor == '') then
  return {E_INVALID_ARGUMENT, '', '', 0, 'argv'}
end
if is_fenced() then
  return {E_STORE_FENCED, '', '', 0, ''}
end

local function replay(rec)
  local position = 0
  if rec.state == 'waiting' then
    position = waiting_position(rec)
  end
  return {REPLAY, '', cjson.encode(rec), position, ''}
end

local existing = load_entry(entry_id)
if existing then
  local same = existing.patient == patient and existing.account == account
  if day ~= '' then
    same = same and existing.doctor == doctor
  else
    same = same and existing.schedule == schedule and (existing.doctor or '') == ''
  end
  if same then
    return replay(existing)
  end
  return {E_IDEMPOTENCY_KEY_REUSED, '', '', 0, ''}
end
if day == '' and not schedule_fields(schedule) then
  return {E_SCHEDULE_NOT_FOUND, '', '', 0, ''}
end
local field = day ~= '' and day_field(doctor, patient) or active_field(schedule, patient)
local active_id = redis.call('HGET', K_WAITLIST, field)
if active_id then
  local active = load_entry(active_id)
  if active and active.account == account then
    return replay(active)
  end
end

-- Why a schedule takes no entry now, or nil when it does.
local function refusal(sched)
  if not sched then
    return {E_SCHEDULE_NOT_FOUND, '', '', 0, ''}
  end
  if sched.status ~= 'open' then
    return {E_SCHEDULE_SUSPENDED, '', '', 0, ''}
  end
  if now < sched.release_ms then
    return {E_NOT_RELEASED, '', '', 0, sched.release_ms}
  end
  if now >= sched.start_ms then
    return {E_SCHEDULE_PAST, '', '', 0, ''}
  end
  if sched.room then
    return {E_ADMISSION_REQUIRED, '', '', 0, sched.room}
  end
  return nil
end

local waits_on = {}
local first_refusal
if day ~= '' then
  for s in string.gmatch(day, '%S+') do
    local refused = refusal(schedule_fields(s))
    if refused then
      first_refusal = first_refusal or refused
    else
      waits_on[#waits_on + 1] = s
    end
  end
  if #waits_on == 0 then
    return first_refusal or {E_SCHEDULE_NOT_FOUND, '', '', 0, ''}
  end
  schedule = waits_on[1]
else
  local refused = refusal(schedule_fields(schedule))
  if refused then
    return refused
  end
  waits_on[1] = schedule
end
if token_deadline > 0 and now > token_deadline then
  return {E_PATIENT_TOKEN_EXPIRED, '', '', 0, ''}
end
if policy_number('one_per_day') == 1 and holds_open(patient, now) then
  return {E_PATIENT_RULE, '', '', 0, 'one_per_day'}
end
for _, s in ipairs(waits_on) do
  for _, slot in ipairs(schedule_slots(s)) do
    if slot_counts(slot).rem > 0 then
      return {E_WAITLIST_UNITS_FREE, '', '', 0, slot}
    end
  end
end

local rec = {
  id = entry_id, schedule = schedule, account = account, patient = patient,
  channel = channel, seq = redis.call('HINCRBY', K_META, 'waitlist_seq', 1), created = now,
  state = 'waiting', hold = offer_hold, slot = '', offered = 0, ended = 0, reason = '',
}
if day ~= '' then
  rec.doctor = doctor
  rec.day = table.concat(waits_on, ' ')
end
local json = save_entry(rec)
redis.call('HSET', K_WAITLIST, field, entry_id)
add_to_queues(rec)
local position = waiting_position(rec)
local event_id = emit(step, 'waitlist_joined', {'entry', entry_id, 'schedule', schedule,
  'account', account, 'patient', patient, 'position', position, 'entry_record', json})
return {OK, event_id, json, position, ''}
