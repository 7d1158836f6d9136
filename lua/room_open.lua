--[[
  room_open: open the waiting room of a release: one or more schedules of the tag whose
  slots are released at the same instant T0. From then on a reserve of those schedules
  needs an admission token (reserve.lua) until the room is sold out.

  KEYS[1..]   the tag's keys, then its three room keys last: see includes/tag.lua and
              includes/room.lua
  ARGV[1]  now_ms       logical clock in ms; 0 = the server's TIME
  ARGV[2]  release      the release id ("<department>.<yyyymmdd>.<name>")
  ARGV[3]  t0_ms        the release instant: every governed schedule's release_ms
  ARGV[4]  opens_ms     joins are taken from then on (T0 - the policy's window)
  ARGV[5]  secret       the draw's seed (hex), revealed by the draw only
  ARGV[6]  seed_hash    SHA-256 of the seed (hex), published from now on
  ARGV[7]  factor_pm    over-admission factor in per mille (1200 = 1.2), >= 1000
  ARGV[8]  token_ms     an admission token's life
  ARGV[9]  request_id   stamped on the event ("rid"); may be ""
  ARGV[10] hospital_id  whose policy and time zone the release follows
  ARGV[11..] schedule ids

  Returns {code, seed_hash, extra}
    0   OK                      opened; seed_hash as given
    1   REPLAY                  already open with the same T0 and schedules: its seed_hash
   -48  room_conflict           extra = "t0_passed", "exists" (another T0 or schedules),
                                "release_time" (a schedule's release_ms is not T0) or
                                "governed" (a schedule is in another release's room)
   -11  schedule_not_found      extra = the schedule
   -17  store_fenced
   -20  invalid_argument        extra = which
  Emits: room_opened (release, hospital, t0, opens, seed_hash, schedules, slots).
]]
--- @include "tag"
--- @include "room"
--- @include "codes"
--- @include "clock"
--- @include "step"
--- @include "meta"
--- @include "events"

local step = new_step(now_ms(ARGV[1]), 1, ARGV[9])
local now = step.now
local release, secret, seed_hash = ARGV[2], ARGV[5], ARGV[6]
local t0, opens = tonumber(ARGV[3]), tonumber(ARGV[4])
local factor_pm, token_ms = tonumber(ARGV[7]), tonumber(ARGV[8])
local hospital = ARGV[10]
if release == '' or secret == '' or seed_hash == '' or not t0 or not opens or opens > t0
  or not factor_pm or factor_pm < 1000 or not token_ms or token_ms <= 0 or #ARGV < 11
  or hospital == '' then
  return {E_INVALID_ARGUMENT, '', 'argv'}
end
if is_fenced() then
  return {E_STORE_FENCED, '', ''}
end
local schedules = {}
local governed = {}
for i = 11, #ARGV do
  schedules[#schedules + 1] = ARGV[i]
  governed[ARGV[i]] = true
end
table.sort(schedules)
local schedule_list = table.concat(schedules, ' ')

local existing = room_field(release, 'state')
if existing then
  if room_field(release, 'schedules') == schedule_list
    and tonumber(room_field(release, 't0_ms')) == t0 then
    return {REPLAY, room_field(release, 'seed_hash'), ''}
  end
  return {E_ROOM_CONFLICT, '', 'exists'}
end
if now >= t0 then
  return {E_ROOM_CONFLICT, '', 't0_passed'}
end
for _, schedule in ipairs(schedules) do
  local v = redis.call('HMGET', K_SCHEDULES, schedule .. ':status', schedule .. ':release_ms',
    schedule .. ':room')
  if not v[1] then
    return {E_SCHEDULE_NOT_FOUND, '', schedule}
  end
  if tonumber(v[2]) ~= t0 then
    return {E_ROOM_CONFLICT, '', 'release_time'}
  end
  if v[3] and v[3] ~= release then
    return {E_ROOM_CONFLICT, '', 'governed'}
  end
end

-- The governed slots, once: admission counts their free units on every step.
local slots = {}
local fields = redis.call('HGETALL', K_SLOTS)
for i = 1, #fields, 2 do
  local slot = string.match(fields[i], '^(.*):sched$')
  if slot and governed[fields[i + 1]] then
    slots[#slots + 1] = slot
  end
end
table.sort(slots)
local slot_list = table.concat(slots, ' ')

local p = release .. ':'
redis.call('HSET', K_ROOMS, p .. 'state', 'open', p .. 't0_ms', t0, p .. 'opens_ms', opens,
  p .. 'secret', secret, p .. 'seed_hash', seed_hash, p .. 'factor_pm', factor_pm,
  p .. 'token_ms', token_ms, p .. 'hospital', hospital, p .. 'schedules', schedule_list, p .. 'slots', slot_list,
  p .. 'joined', 0, p .. 'late', 0, p .. 'drawn', 0, p .. 'admitted', 0,
  p .. 'outstanding', 0, p .. 'used', 0, p .. 'lapsed', 0)
for _, schedule in ipairs(schedules) do
  redis.call('HSET', K_SCHEDULES, schedule .. ':room', release)
end
emit(step, 'room_opened', {'release', release, 'hospital', hospital, 't0', t0, 'opens', opens,
  'seed_hash', seed_hash, 'factor_pm', factor_pm, 'token_ms', token_ms,
  'schedules', schedule_list, 'slots', slot_list})
return {OK, seed_hash, ''}
