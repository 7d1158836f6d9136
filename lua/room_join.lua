--[[
  room_join: a patient joins a release's waiting room, once per (account, patient):
  a second join answers the same ticket. Joining never touches the slots.

  Before T0 the ticket takes its place in the draw at once: it is filed under its draw
  key SHA1(seed .. ticket), so the queue is in drawn order the moment T0 comes and the
  draw itself costs nothing then (the seed stays secret until T0, and no status shows
  a place before it). At or after T0 (or once the room has drawn) it queues behind
  every drawn ticket, in arrival order.

  KEYS[1..]   the tag's keys, then its three room keys last: see includes/tag.lua and
              includes/room.lua
  ARGV[1]  now_ms      logical clock in ms; 0 = the server's TIME
  ARGV[2]  release
  ARGV[3]  ticket      a fresh opaque id from the caller (used only if new)
  ARGV[4]  account_id
  ARGV[5]  patient_id
  ARGV[6]  request_id  stamped on the event ("rid"); may be ""
  ARGV[7]  expire_ms   when the tag's room keys expire (the visit day is over); "" or
                       absent: no expiry set

  Returns {code, ticket, extra}
    0   OK                      joined; the new ticket
    1   REPLAY                  already joined: the ticket it has
   -45  room_not_found
   -46  room_not_open           joins start at opens_ms; extra = opens_ms
   -47  room_sold_out           extra = the release's schedules (space-separated)
   -17  store_fenced
   -20  invalid_argument
  Emits: room_joined (release, ticket, account, patient, late = 0 or the late seq).
]]
--- @include "tag"
--- @include "room"
--- @include "codes"
--- @include "clock"
--- @include "step"
--- @include "meta"
--- @include "events"

local step = new_step(now_ms(ARGV[1]), 1, ARGV[6])
local now = step.now
local release, ticket, account, patient = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if release == '' or ticket == '' or account == '' or patient == '' then
  return {E_INVALID_ARGUMENT, '', 'argv'}
end
local p = release .. ':'
local r = redis.call('HMGET', K_ROOMS, p .. 'state', p .. 't0_ms', p .. 'opens_ms',
  p .. 'schedules', p .. 'secret')
local state, t0, opens = r[1], tonumber(r[2]), tonumber(r[3])
if not state then
  return {E_ROOM_NOT_FOUND, '', ''}
end
local index = release .. '|' .. account .. '|' .. patient
local joined = redis.call('HGET', K_TICKETS, index)
if joined then
  return {REPLAY, joined, ''}
end
if is_fenced() then
  return {E_STORE_FENCED, '', ''}
end
if state == 'sold_out' then
  return {E_ROOM_SOLD_OUT, '', r[4]}
end
if now < opens then
  return {E_ROOM_NOT_OPEN, '', opens}
end
if redis.call('HEXISTS', K_TICKETS, ticket) == 1 then
  return {E_INVALID_ARGUMENT, '', 'ticket'}
end

local late = 0
if state == 'open' and now < t0 then
  redis.call('ZADD', K_QUEUE, 0, release .. '|d|' .. draw_key(r[5], ticket) .. '|' .. ticket)
else
  late = redis.call('HINCRBY', K_ROOMS, p .. 'late', 1)
  redis.call('ZADD', K_QUEUE, 0, release .. '|l|' .. string.format('%010d', late) .. '|' .. ticket)
end
redis.call('HSET', K_TICKETS, ticket, cjson.encode({
  r = release, a = account, p = patient, j = now, l = late, k = '',
}), index, ticket)
redis.call('HINCRBY', K_ROOMS, p .. 'joined', 1)
local expire = tonumber(ARGV[7] or '')
if expire then
  -- The first ticket creates the tickets and queue keys: they expire with the rooms.
  for _, key in ipairs({K_ROOMS, K_TICKETS, K_QUEUE}) do
    redis.call('PEXPIREAT', key, expire)
  end
end
emit(step, 'room_joined', {'release', release, 'ticket', ticket, 'account', account,
  'patient', patient, 'late', late})
return {OK, ticket, ''}
