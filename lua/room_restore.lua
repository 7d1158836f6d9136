--[[
  room_restore: a rebuild puts back a release's waiting room from the record Postgres
  keeps (inventory/recovery/rooms.py computes it), in one atomic step, after the tag's
  own rebuild. A room Redis still has is kept as it is (it is newer than the record);
  either way a room that is not sold out governs its schedules again, so reserve asks
  for a token as before.

  KEYS[1..]   the tag's keys, then its three room keys last: see includes/tag.lua and
              includes/room.lua
  ARGV[1]  now_ms      logical clock in ms; 0 = the server's TIME
  ARGV[2]  release
  ARGV[3]  fields      JSON object: the release's fields ("state", "t0_ms", ...) as
                       includes/room.lua names them, values as text
  ARGV[4]  tickets     JSON array of [ticket, ticket record text, index field]
  ARGV[5]  tokens      JSON array of [token, admission text] (includes/admission.lua)
  ARGV[6]  members     JSON array of queue members (drawn, late, pending, tokens)
  ARGV[7]  expire_ms   when the tag's room keys expire; "" = no expiry
  ARGV[8]  request_id  stamped on the event ("rid"); may be ""

  Returns {code, state}
    0   OK                 restored from the record
    1   REPLAY             Redis had the room: kept, its schedules governed again
   -20  invalid_argument
  Emits: room_restored (release, state, seed_hash, admitted, outstanding, kept).
]]
--- @include "tag"
--- @include "room"
--- @include "codes"
--- @include "clock"
--- @include "step"
--- @include "meta"
--- @include "events"

local step = new_step(now_ms(ARGV[1]), 1, ARGV[8])
local release = ARGV[2]
local fields = cjson.decode(ARGV[3])
if release == '' or type(fields) ~= 'table' or not fields.state then
  return {E_INVALID_ARGUMENT, ''}
end
local p = release .. ':'

local function govern(state, schedules)
  if state == 'sold_out' then
    return
  end
  for schedule in string.gmatch(schedules or '', '%S+') do
    redis.call('HSET', K_SCHEDULES, schedule .. ':room', release)
  end
end

local kept = redis.call('HMGET', K_ROOMS, p .. 'state', p .. 'schedules', p .. 'seed_hash',
  p .. 'admitted', p .. 'outstanding')
if kept[1] then
  govern(kept[1], kept[2])
  emit(step, 'room_restored', {'release', release, 'state', kept[1], 'seed_hash', kept[3],
    'admitted', kept[4] or 0, 'outstanding', kept[5] or 0, 'kept', 1})
  return {REPLAY, kept[1]}
end

for name, value in pairs(fields) do
  redis.call('HSET', K_ROOMS, p .. name, value)
end
for _, t in ipairs(cjson.decode(ARGV[4])) do
  redis.call('HSET', K_TICKETS, t[1], t[2], t[3], t[1])
end
for _, a in ipairs(cjson.decode(ARGV[5])) do
  redis.call('HSET', K_ROOMS, 'tok:' .. a[1], a[2])
end
for _, member in ipairs(cjson.decode(ARGV[6])) do
  redis.call('ZADD', K_QUEUE, 0, member)
end
local expire = tonumber(ARGV[7] or '')
if expire then
  for _, key in ipairs({K_ROOMS, K_TICKETS, K_QUEUE}) do
    if redis.call('EXISTS', key) == 1 then
      redis.call('PEXPIREAT', key, expire)
    end
  end
end
govern(fields.state, fields.schedules)
emit(step, 'room_restored', {'release', release, 'state', fields.state,
  'seed_hash', fields.seed_hash, 'admitted', fields.admitted or 0,
  'outstanding', fields.outstanding or 0, 'kept', 0})
return {OK, fields.state}
