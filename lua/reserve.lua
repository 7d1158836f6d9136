--[[
  reserve: take one unit of a slot for a patient, as a hold with a payment deadline.

  KEYS[1..11] the department-day tag's keys, see includes/tag.lua
  KEYS[12]    only with an admission token (ARGV[12]): the tag's rooms hash
              (includes/room.lua)
  KEYS[12..] or KEYS[13..]  optional: rate-limit buckets checked first, all-or-nothing,
              by GCRA (includes/gcra.lua); the API passes its per-account and
              per-address buckets here on a single Redis server (one call, not two)
  ARGV[1]  now_ms            logical clock in ms; 0 = the server's TIME
  ARGV[2]  rand_seed         seeds the anti-scalping delay of units freed by reclaim
  ARGV[3]  hold_id           derived from (account, idempotency key, tag) by the caller,
                             so a retry with the same key lands on the same hold
  ARGV[4]  slot_id
  ARGV[5]  account_id
  ARGV[6]  patient_id
  ARGV[7]  channel           e.g. wechat, app, web
  ARGV[8]  fingerprint       digest of (slot, patient, channel): what the key was used for
  ARGV[9]  token_deadline_ms when > 0, a patient token from the patient tag's two-step rule
                             is only valid until then: refuse after it
  ARGV[10] reclaim_limit     at most this many due timers of the slot are run first
  ARGV[11] request_id        the API request's id, stamped on the events ("rid"); may be ""
  ARGV[12] admission_token   present exactly when KEYS[12] is the rooms hash: the token
                             a queued release's room gave this account and patient
  then interval_ms and burst of each bucket, in the buckets' order (ARGV[12..] or
                             ARGV[13..]); so #ARGV - 11 = 2 x buckets, or that + 1
                             with a token (telling the two layouts apart)

  A schedule whose release is queued ("<schedule>:room" in the schedules hash, while its
  room is not sold out, see room_open.lua) is reserved only with a valid admission
  token, which the hold's step marks used (once: a retry with the same key replays the
  hold before any token check). A refusal for another reason leaves the token unused.

  Returns {code, event_id, hold_json, rem, held, booked, wait, cap, extra}
    0   OK                      new hold; event_id of its hold_created event
    1   REPLAY                  the same key with the same request: the existing hold
   -9   idempotency_key_reused  the same key with a different request
   -40  admission_required      a queued release, and no token; extra = the release
   -41  admission_token_invalid no such token, or another release's
   -42  admission_token_expired
   -43  admission_token_used
   -44  admission_token_not_yours  another account's or patient's token
   -22  rate_limited            a bucket of KEYS[12..] is over its limit; nothing counted,
                                nothing held; extra = "<retry_after_ms> <bucket i> ..."
   -17  store_fenced            the tag's state is older than Postgres: rebuild first
   -12  slot_not_found
   -11  schedule_not_found
   -2   schedule_suspended
   -1   not_released            extra = release time (ms)
   -3   schedule_past
   -18  patient_token_expired   the two-step rule's token ran out before this step
   -5   patient_rule            extra = "one_per_day"
   -4   sold_out
   -20  invalid_argument
  Emits: hold_created, room_admission_used (release, ticket, hold) when a token was
  used (plus hold_expired / unit_returned for every due timer reclaimed).
  Checks everything before its first write; reclaim writes are whole steps of their own.
]]
--- @include "tag"
--- @include "codes"
--- @include "clock"
--- @include "step"
--- @include "gcra"
--- @include "holds"
--- @include "schedules"
--- @include "patient_holds"
--- @include "timers"
--- @include "due_timers"
--- @include "events"
--- @include "admission"

local step = new_step(now_ms(ARGV[1]), ARGV[2], ARGV[11])
local now = step.now
local hold_id, slot, account, patient = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local channel, fingerprint = ARGV[7], ARGV[8]
local token_deadline = tonumber(ARGV[9])
local reclaim_limit = tonumber(ARGV[10])
-- With an admission token, KEYS[12] is the rooms hash and ARGV[12] the token.
local with_token = (#ARGV - 11) % 2 == 1
local key_base, arg_base = TAG_KEY_COUNT, 11
local K_ADMISSIONS, admission_token = nil, ''
if with_token then
  key_base, arg_base = TAG_KEY_COUNT + 1, 12
  K_ADMISSIONS, admission_token = KEYS[TAG_KEY_COUNT + 1], ARGV[12]
end
local buckets = #KEYS - key_base
if hold_id == '' or slot == '' or account == '' or patient == '' or not token_deadline
  or not reclaim_limit or buckets < 0 or #ARGV ~= arg_base + 2 * buckets
  or (with_token and admission_token == '') then
  return hold_reply(E_INVALID_ARGUMENT, nil, nil, 'argv')
end

if buckets > 0 then
  local refused = take_rate_limits(now, key_base, arg_base, buckets)
  if refused == false then
    return hold_reply(E_INVALID_ARGUMENT, nil, nil, 'rate limit')
  end
  if refused then
    return hold_reply(E_RATE_LIMITED, nil, nil, table.concat(refused, ' '))
  end
end

-- One read of the tag's meta hash for every policy and flag this step needs.
local meta = redis.call('HMGET', K_META, 'fenced', 'one_per_day', 'hold_ttl_ms', 'tag')
if meta[1] == '1' then
  return hold_reply(E_STORE_FENCED, nil, nil)
end
step.tag = meta[4] or ''

local existing = load_hold(hold_id)
if existing then
  if existing.fp == fingerprint and existing.account == account then
    return hold_reply(REPLAY, nil, existing)
  end
  return hold_reply(E_IDEMPOTENCY_KEY_REUSED, nil, nil)
end

local v = redis.call('HMGET', K_SLOTS, slot .. ':sched', slot .. ':rem')
local schedule, remaining = v[1], tonumber(v[2]) or 0
if not schedule then
  return hold_reply(E_SLOT_NOT_FOUND, nil, nil)
end
local sched = schedule_fields(schedule)
if not sched then
  return hold_reply(E_SCHEDULE_NOT_FOUND, nil, nil)
end
if sched.status ~= 'open' then
  return hold_reply(E_SCHEDULE_SUSPENDED, nil, nil)
end
if now < sched.release_ms then
  return hold_reply(E_NOT_RELEASED, nil, nil, sched.release_ms)
end
if now >= sched.start_ms then
  return hold_reply(E_SCHEDULE_PAST, nil, nil)
end
-- A queued release: no reserve without this account's and patient's live token.
local admission = nil
if sched.room then
  if not with_token then
    return hold_reply(E_ADMISSION_REQUIRED, nil, nil, sched.room)
  end
  admission = parse_admission(redis.call('HGET', K_ADMISSIONS, 'tok:' .. admission_token))
  if not admission or admission.release ~= sched.room then
    return hold_reply(E_ADMISSION_TOKEN_INVALID, nil, nil)
  end
  if admission.account ~= account or admission.patient ~= patient then
    return hold_reply(E_ADMISSION_TOKEN_NOT_YOURS, nil, nil)
  end
  if admission.state == 'u' then
    return hold_reply(E_ADMISSION_TOKEN_USED, nil, nil)
  end
  if admission.state ~= 'a' or now >= admission.expiry then
    return hold_reply(E_ADMISSION_TOKEN_EXPIRED, nil, nil)
  end
end
if token_deadline > 0 and now > token_deadline then
  return hold_reply(E_PATIENT_TOKEN_EXPIRED, nil, nil)
end
local patient_ids = nil
if tonumber(meta[2]) == 1 then
  patient_ids = patient_holds(patient)
  for _, id in ipairs(patient_ids) do
    local other = load_hold(id)
    if other and is_open(other, now) then
      return hold_reply(E_PATIENT_RULE, nil, nil, 'one_per_day')
    end
  end
end

-- The refusal a release storm mostly gets, so it reads as little as it can.
if remaining <= 0 then
  if reclaim_slot(step, slot, reclaim_limit) > 0 then
    -- Reclaiming ended due holds, maybe this patient's own: read both again.
    remaining = tonumber(redis.call('HGET', K_SLOTS, slot .. ':rem')) or 0
    patient_ids = nil
  end
  if remaining <= 0 then
    return hold_reply(E_SOLD_OUT, nil, nil)
  end
end

local deadline = now + (tonumber(meta[3]) or 0)
local rec = {
  id = hold_id, slot = slot, schedule = schedule, account = account, patient = patient,
  channel = channel, fp = fingerprint, amount = sched.fee, created = now, deadline = deadline,
  extended = 0, state = 'held', payment_ref = '', confirmed = 0, ended = 0, reason = '',
}
-- The counts after this step, for its event and reply: two from the writes themselves.
local rest = redis.call('HMGET', K_SLOTS, slot .. ':booked', slot .. ':wait', slot .. ':cap')
local counts = {
  rem = redis.call('HINCRBY', K_SLOTS, slot .. ':rem', -1),
  held = redis.call('HINCRBY', K_SLOTS, slot .. ':held', 1),
  booked = tonumber(rest[1]) or 0, wait = tonumber(rest[2]) or 0, cap = tonumber(rest[3]) or 0,
}
local json = save_hold(rec)
patient_ids = patient_ids or patient_holds(patient)
patient_ids[#patient_ids + 1] = hold_id
set_patient_holds(patient, patient_ids)
add_timer(slot, 'h', hold_id, deadline)
if admission then
  admission.state = 'u'
  redis.call('HSET', K_ADMISSIONS, 'tok:' .. admission_token, admission_text(admission))
  redis.call('HINCRBY', K_ADMISSIONS, admission.release .. ':outstanding', -1)
  redis.call('HINCRBY', K_ADMISSIONS, admission.release .. ':used', 1)
end
local event_id = emit_hold(step, 'hold_created', rec, {
  'channel', channel, 'amount', sched.fee, 'deadline', deadline,
}, json, counts)
if admission then
  emit(step, 'room_admission_used', {'release', admission.release, 'ticket', admission.ticket,
    'hold', hold_id})
end
return hold_reply(OK, event_id, rec, nil, json, counts)
