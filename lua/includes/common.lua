--[[
  Shared helpers, spliced into a script by the loader where it says
  `--- @include "common"`. Everything here is `local`: Redis refuses globals.

  Every state-machine script of a department-day tag receives the same eight KEYS,
  in this order (inventory/store/keys.py builds them; nowhere else does):
    KEYS[1] meta         hash   seq, fenced, tag, policy (hold_ttl_ms, max_hold_ms,
                                extend_ms, one_per_day, rerelease_min_ms, rerelease_max_ms)
    KEYS[2] schedules    hash   "<schedule>:<field>" -> value
    KEYS[3] slots        hash   "<slot>:<field>" -> value (sched, cap, rem, held, booked, wait)
    KEYS[4] holds        hash   "<hold>" -> JSON hold record
    KEYS[5] patients     hash   "<patient>" -> space-separated ids of open holds and bookings
    KEYS[6] timers       zset   "<slot>|<kind>|<id>" scored by due time (ms): the expirer's index
    KEYS[7] slot_timers  zset   "<slot>|<due:15 digits>|<kind>|<id>", all scores 0: a slot's
                                due timers in due order by ZRANGEBYLEX, for reserve's reclaim
    KEYS[8] outbox       stream one event per state change
  Timer kinds: "h" = a hold's payment deadline, "w" = a freed unit waiting out the
  anti-scalping delay before it returns to the pool.

  Clock: deadlines are judged by the Redis server's TIME of the tag's primary, unless
  ARGV[1] (now_ms) is a positive integer; tests pass their logical clock that way.
]]

local K_META, K_SCHEDULES, K_SLOTS, K_HOLDS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_PATIENTS, K_TIMERS, K_SLOT_TIMERS, K_OUTBOX = KEYS[5], KEYS[6], KEYS[7], KEYS[8]

--- @include "codes"
--- @include "clock"

-- Park-Miller generator: products stay below 2^53, so Lua's doubles are exact.
-- The seed comes from the caller (ARGV), so a step is deterministic and replayable.
local rng_state = 1
local function seed_rng(seed)
  rng_state = (tonumber(seed) or 1) % 2147483647
  if rng_state <= 0 then rng_state = 1 end
end
local function next_random()
  rng_state = (rng_state * 16807) % 2147483647
  return rng_state
end

local function pad_due(ms)
  return string.format('%015d', ms)
end

local function slot_counts(slot)
  local v = redis.call('HMGET', K_SLOTS, slot .. ':rem', slot .. ':held', slot .. ':booked',
    slot .. ':wait', slot .. ':cap')
  return {
    rem = tonumber(v[1]) or 0, held = tonumber(v[2]) or 0, booked = tonumber(v[3]) or 0,
    wait = tonumber(v[4]) or 0, cap = tonumber(v[5]) or 0,
  }
end

local function counts_array(c)
  return {c.rem, c.held, c.booked, c.wait, c.cap}
end

local function schedule_fields(schedule)
  local v = redis.call('HMGET', K_SCHEDULES, schedule .. ':status', schedule .. ':release_ms',
    schedule .. ':start_ms', schedule .. ':cancel_deadline_ms', schedule .. ':fee')
  if not v[1] then
    return nil
  end
  return {
    status = v[1], release_ms = tonumber(v[2]), start_ms = tonumber(v[3]),
    cancel_deadline_ms = tonumber(v[4]), fee = tonumber(v[5]),
  }
end

-- Set when the tag's state is found older than Postgres (a lost or rolled-back Redis):
-- every state change is refused until a rebuild from Postgres clears it.
local function is_fenced()
  return redis.call('HGET', K_META, 'fenced') == '1'
end

local function policy_number(field)
  return tonumber(redis.call('HGET', K_META, field)) or 0
end

-- The API request that caused this step, if the caller passed one: stamped on every
-- event so the worker's handling of the same booking logs the same request id.
local request_id = ''

-- The tag's name, stamped on every event: read at most once per step (a step that
-- emits several events, or that read the meta hash anyway, sets or reuses it).
local tag_name = nil

-- Appends one event, stamped with the tag's next sequence number, and returns its
-- stream id. `fields` is a flat list of name, value pairs; the slot's counts after
-- the change are added when `slot` is given, and then also returned (second value) so
-- that a reply built right after the step need not read them again. A step that
-- already knows the counts after its change passes them as `counts` (read otherwise).
local function emit(event_type, now, fields, slot, counts)
  local seq = redis.call('HINCRBY', K_META, 'seq', 1)
  if not tag_name then
    tag_name = redis.call('HGET', K_META, 'tag') or ''
  end
  local entry = {'type', event_type, 'seq', seq, 'at', now, 'tag', tag_name}
  local n = 8
  if request_id ~= '' then
    entry[9], entry[10], n = 'rid', request_id, 10
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

-- Writes the hold record and returns the JSON written: the step's event and reply
-- carry the same text, and encoding it once is a measurable share of a step's cost.
local function save_hold(rec)
  local json = cjson.encode(rec)
  redis.call('HSET', K_HOLDS, rec.id, json)
  return json
end

-- The event of a step on one hold: its ids, the step's own fields, and the whole hold
-- record after the step (so the persister writes the hold without reading Redis).
-- `json` is the record as save_hold just wrote it (encoded here when nil), `counts` the
-- slot's counts after the step when the step knows them (read here when nil).
-- Returns the event's stream id, the record's JSON and the slot's counts after the
-- step: exactly what hold_reply needs, so a step's reply reads and encodes nothing.
local function emit_hold(event_type, now, rec, fields, json, counts)
  json = json or cjson.encode(rec)
  local all = {'hold', rec.id, 'schedule', rec.schedule, 'account', rec.account,
    'patient', rec.patient}
  for i = 1, #fields do
    all[#all + 1] = fields[i]
  end
  all[#all + 1] = 'record'
  all[#all + 1] = json
  local event_id, c = emit(event_type, now, all, rec.slot, counts)
  return event_id, json, c
end

local function load_hold(hold_id)
  local raw = redis.call('HGET', K_HOLDS, hold_id)
  if not raw then
    return nil
  end
  return cjson.decode(raw)
end


local function add_timer(slot, kind, id, due)
  redis.call('ZADD', K_TIMERS, due, slot .. '|' .. kind .. '|' .. id)
  redis.call('ZADD', K_SLOT_TIMERS, 0, slot .. '|' .. pad_due(due) .. '|' .. kind .. '|' .. id)
end

local function remove_timer(slot, kind, id, due)
  redis.call('ZREM', K_TIMERS, slot .. '|' .. kind .. '|' .. id)
  redis.call('ZREM', K_SLOT_TIMERS, slot .. '|' .. pad_due(due) .. '|' .. kind .. '|' .. id)
end

local function patient_holds(patient)
  local raw = redis.call('HGET', K_PATIENTS, patient)
  local ids = {}
  if raw then
    for id in string.gmatch(raw, '%S+') do
      ids[#ids + 1] = id
    end
  end
  return ids
end

local function set_patient_holds(patient, ids)
  if #ids == 0 then
    redis.call('HDEL', K_PATIENTS, patient)
  else
    redis.call('HSET', K_PATIENTS, patient, table.concat(ids, ' '))
  end
end

local function add_patient_hold(patient, hold_id)
  local ids = patient_holds(patient)
  ids[#ids + 1] = hold_id
  set_patient_holds(patient, ids)
end

local function remove_patient_hold(patient, hold_id)
  local kept = {}
  for _, id in ipairs(patient_holds(patient)) do
    if id ~= hold_id then
      kept[#kept + 1] = id
    end
  end
  set_patient_holds(patient, kept)
end

-- A freed unit goes back to the pool at once, or, when the tag's anti-scalping window
-- is set, waits a random delay within it (counted in `wait` meanwhile).
local function free_unit(slot, id, now)
  local lo = policy_number('rerelease_min_ms')
  local hi = policy_number('rerelease_max_ms')
  if hi <= 0 then
    redis.call('HINCRBY', K_SLOTS, slot .. ':rem', 1)
    return
  end
  if lo > hi then lo = hi end
  local delay = lo + (next_random() % (hi - lo + 1))
  redis.call('HINCRBY', K_SLOTS, slot .. ':wait', 1)
  add_timer(slot, 'w', id, now + delay)
end

local EVENT_FOR_END = {
  expired = 'hold_expired', released = 'hold_released', cancelled = 'booking_cancelled',
}

-- Ends an open hold or booking: its unit leaves `held` (or `booked`), the record
-- records how it ended, the patient index forgets it, and the unit is freed.
-- Returns what emit_hold returns (the event's stream id, the record's JSON, the counts).
local function end_hold(rec, new_state, now, reason)
  local was = rec.state
  if was == 'held' then
    redis.call('HINCRBY', K_SLOTS, rec.slot .. ':held', -1)
    remove_timer(rec.slot, 'h', rec.id, rec.deadline)
  else
    redis.call('HINCRBY', K_SLOTS, rec.slot .. ':booked', -1)
  end
  rec.state = new_state
  rec.ended = now
  rec.reason = reason
  local json = save_hold(rec)
  remove_patient_hold(rec.patient, rec.id)
  free_unit(rec.slot, rec.id, now)
  return emit_hold(EVENT_FOR_END[new_state], now, rec, {'from', was, 'reason', reason}, json)
end

-- A waiting unit whose delay is over returns to the pool.
local function return_waiting_unit(slot, id, due, now)
  remove_timer(slot, 'w', id, due)
  redis.call('HINCRBY', K_SLOTS, slot .. ':wait', -1)
  redis.call('HINCRBY', K_SLOTS, slot .. ':rem', 1)
  return emit('unit_returned', now, {'hold', id}, slot)
end

-- Runs one due timer; returns 1 if it changed state.
local function run_timer(slot, kind, id, due, now)
  if kind == 'w' then
    return_waiting_unit(slot, id, due, now)
    return 1
  end
  local rec = load_hold(id)
  if rec and rec.state == 'held' and rec.deadline <= now then
    end_hold(rec, 'expired', now, 'deadline')
    return 1
  end
  -- A stale index entry (the hold already ended): drop it, no state change.
  remove_timer(slot, kind, id, due)
  return 0
end

-- Reserve's reclaim: due timers of one slot, oldest first, at most `limit`.
local function reclaim_slot(slot, now, limit)
  local members = redis.call('ZRANGEBYLEX', K_SLOT_TIMERS, '[' .. slot .. '|',
    '(' .. slot .. '|' .. pad_due(now + 1), 'LIMIT', 0, limit)
  local changed = 0
  for _, m in ipairs(members) do
    local _, due, kind, id = string.match(m, '^(.-)|(%d+)|(%a)|(.+)$')
    changed = changed + run_timer(slot, kind, id, tonumber(due), now)
  end
  return changed
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
