--[[
  room_status: one ticket's place in its release's waiting room, read only: the status
  path of the crowd, so one call with O(log n) work.

  KEYS[1]  rooms    the tag's rooms hash (includes/room.lua)
  KEYS[2]  tickets  the tag's tickets hash
  KEYS[3]  queue    the tag's queue
  ARGV[1]  release
  ARGV[2]  ticket
  ARGV[3]  account_id   a ticket of another account answers ticket_not_found

  Returns {code, state, position, admitted, token, token_expiry_ms, token_state, drawn,
           t0_ms, sold_out_ms, drawn_ms, joined_ms, patient, late}
    0   OK                 position: 0 until drawn, then the ticket's place (1-based);
                           token "" unless admitted; token_state a, u or x;
                           late: 0 when joined before T0, else its arrival number (a
                           watcher places it at drawn + late without asking again)
   -45  room_not_found
   -49  ticket_not_found   no such ticket in this release, or another account's
  Emits: nothing.
]]
--- @include "codes"
--- @include "admission"

local K_ROOMS, K_TICKETS, K_QUEUE = KEYS[1], KEYS[2], KEYS[3]
local release, ticket, account = ARGV[1], ARGV[2], ARGV[3]
local p = release .. ':'
local r = redis.call('HMGET', K_ROOMS, p .. 'state', p .. 'admitted', p .. 'drawn',
  p .. 't0_ms', p .. 'sold_out_ms', p .. 'drawn_ms', p .. 'seed')
if not r[1] then
  return {E_ROOM_NOT_FOUND}
end
local raw = redis.call('HGET', K_TICKETS, ticket)
local rec = raw and cjson.decode(raw)
if not rec or rec.r ~= release or rec.a ~= account then
  return {E_TICKET_NOT_FOUND}
end
local drawn = tonumber(r[3]) or 0
local position = 0
if r[1] ~= 'open' then
  if rec.l > 0 then
    position = drawn + rec.l
  else
    position = redis.call('ZLEXCOUNT', K_QUEUE, '[' .. release .. '|d|',
      '[' .. release .. '|d|' .. redis.sha1hex(r[7] .. ticket) .. '|' .. ticket)
  end
end
local token, expiry, token_state = '', 0, ''
if rec.k ~= '' then
  local a = parse_admission(redis.call('HGET', K_ROOMS, 'tok:' .. rec.k))
  if a then
    token, expiry, token_state = rec.k, a.expiry, a.state
  end
end
return {OK, r[1], position, tonumber(r[2]) or 0, token, expiry, token_state, drawn,
  tonumber(r[4]) or 0, tonumber(r[5]) or 0, tonumber(r[6]) or 0, rec.j, rec.p, rec.l}
