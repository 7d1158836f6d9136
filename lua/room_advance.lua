--[[
  room_advance: move a release's waiting room forward to the time passed in, in one
  bounded step. Any process may call it any number of times (the worker on a tick, the
  API while it serves the release's statuses): a step only does what the clock and the
  counts call for, so nothing depends on one process staying alive.

  In order:
    1. open and T0 passed: the draw. room_join filed every ticket joined before T0
       under its draw key ("<release>|d|<SHA1(seed .. ticket)>|<ticket>", so the
       sorted set is in drawn order already): the step reveals the seed and starts
       admitting. Tickets an earlier version left undrawn ("<release>|p|<ticket>")
       are drawn first, a batch per step.
    2. admitting: lapse tokens past their expiry (at most `limit`);
    3. count what can be taken: the governed slots' free units, plus their holds and
       anti-scalping waits due within a token's life;
    4. nothing to take: the release is sold out (one write that every waiting ticket
       reads), and its schedules leave the room (reserve needs no token any more);
    5. else admit the next tickets in queue order while outstanding tokens stay below
       floor(what can be taken x factor), at most `limit`.

  KEYS[1..]   the tag's keys, then its three room keys last: see includes/tag.lua and
              includes/room.lua
  ARGV[1]  now_ms      logical clock in ms; 0 = the server's TIME
  ARGV[2]  release
  ARGV[3]  nonce       fresh secret random text: tokens are SHA1(nonce .. ticket)
  ARGV[4]  limit       at most this many tickets drawn, lapsed or admitted per call
  ARGV[5]  request_id  stamped on the events ("rid"); may be ""
  ARGV[6]  admit_limit at most this many tickets admitted per call (absent: limit): the
                       admitted reserve at once, so a step's admissions are a burst of
                       requests that must fit the API's bound on requests in flight
  ARGV[7]  admit_window_ms  with admit_limit, at most admit_limit admitted per window of
                       this many ms, whichever process steps the room (absent or 0: per
                       call only): several drivers stepping in one window must not
                       each admit a burst

  Returns {code, state, drawn, lapsed, admitted, takeable}
    0   OK                 state after the step; drawn: on the step that completes
                           the draw every ticket it placed, on a step filing an
                           earlier version's tickets that batch, else 0; what it
                           lapsed and admitted; takeable = units free or coming back
                           within a token's life
   -45  room_not_found
   -17  store_fenced
   -20  invalid_argument
  Emits: room_drawn (release, seed, seed_hash, drawn) when the draw completes,
    room_admission_lapsed (release, ticket, account, patient) per lapsed token,
    room_admitted (release, ticket, account, patient, position, expires) per admission,
    room_sold_out (release, admitted, waiting) once.
]]
--- @include "tag"
--- @include "room"
--- @include "codes"
--- @include "clock"
--- @include "step"
--- @include "meta"
--- @include "timers"
--- @include "events"

local step = new_step(now_ms(ARGV[1]), 1, ARGV[5])
local now = step.now
local release, nonce, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])
local admit_limit = tonumber(ARGV[6] or '') or limit
local admit_window = tonumber(ARGV[7] or '') or 0
if release == '' or nonce == '' or not limit or limit < 1 or admit_limit < 1 then
  return {E_INVALID_ARGUMENT, '', 0, 0, 0, 0}
end
local p = release .. ':'
local r = redis.call('HMGET', K_ROOMS, p .. 'state', p .. 't0_ms', p .. 'secret',
  p .. 'token_ms', p .. 'factor_pm', p .. 'slots', p .. 'outstanding', p .. 'cursor',
  p .. 'admitted', p .. 'schedules', p .. 'window_ms', p .. 'window_n')
local state = r[1]
if not state then
  return {E_ROOM_NOT_FOUND, '', 0, 0, 0, 0}
end
if state == 'sold_out' or now < tonumber(r[2]) then
  return {OK, state, 0, 0, 0, 0}
end
if is_fenced() then
  return {E_STORE_FENCED, state, 0, 0, 0, 0}
end

-- 1. The draw: reveal the seed. Only tickets joined under an earlier version (which
--    drew at T0) are still to be filed by their key, a batch per step.
local drawn = 0
if state == 'open' then
  local secret = r[3]
  local prefix = release .. '|p|'
  local batch = redis.call('ZRANGEBYLEX', K_QUEUE, '[' .. prefix, '(' .. release .. '|q',
    'LIMIT', 0, limit)
  for _, member in ipairs(batch) do
    local ticket = string.sub(member, #prefix + 1)
    redis.call('ZREM', K_QUEUE, member)
    redis.call('ZADD', K_QUEUE, 0,
      release .. '|d|' .. draw_key(secret, ticket) .. '|' .. ticket)
  end
  if #batch == limit and redis.call('ZLEXCOUNT', K_QUEUE, '[' .. prefix,
      '(' .. release .. '|q') > 0 then
    return {OK, state, #batch, 0, 0, 0}
  end
  local total = redis.call('ZLEXCOUNT', K_QUEUE, '[' .. release .. '|d|',
    '(' .. release .. '|e')
  drawn = total
  state = 'admitting'
  redis.call('HSET', K_ROOMS, p .. 'state', state, p .. 'seed', secret, p .. 'drawn', total,
    p .. 'drawn_ms', now)
  emit(step, 'room_drawn', {'release', release, 'seed', secret,
    'seed_hash', redis.call('HGET', K_ROOMS, p .. 'seed_hash'), 'drawn', total})
end

-- 2. Tokens past their expiry lapse; a used token's entry just leaves the index.
local lapsed = 0
local outstanding = tonumber(r[7]) or 0
local token_prefix = release .. '|t|'
local due = redis.call('ZRANGEBYLEX', K_QUEUE, '[' .. token_prefix,
  '(' .. token_prefix .. pad_due(now + 1), 'LIMIT', 0, limit)
for _, member in ipairs(due) do
  redis.call('ZREM', K_QUEUE, member)
  local token = string.match(member, '|([^|]+)$')
  local a = parse_admission(redis.call('HGET', K_ROOMS, 'tok:' .. token))
  if a and a.state == 'a' then
    a.state = 'x'
    redis.call('HSET', K_ROOMS, 'tok:' .. token, admission_text(a))
    outstanding = outstanding - 1
    lapsed = lapsed + 1
    emit(step, 'room_admission_lapsed', {'release', release, 'ticket', a.ticket,
      'account', a.account, 'patient', a.patient})
  end
end
if lapsed > 0 then
  redis.call('HSET', K_ROOMS, p .. 'outstanding', outstanding)
  redis.call('HINCRBY', K_ROOMS, p .. 'lapsed', lapsed)
end

-- 3. What can be taken within a token's life.
local token_ms, factor_pm = tonumber(r[4]), tonumber(r[5])
local takeable = 0
for slot in string.gmatch(r[6] or '', '%S+') do
  takeable = takeable + math.max(0, tonumber(redis.call('HGET', K_SLOTS, slot .. ':rem')) or 0)
  takeable = takeable + redis.call('ZLEXCOUNT', K_SLOT_TIMERS, '[' .. slot .. '|',
    '(' .. slot .. '|' .. pad_due(now + token_ms + 1))
end

-- 4. Nothing left and nothing coming back: sold out, one write.
if takeable == 0 then
  local waiting = redis.call('ZLEXCOUNT', K_QUEUE,
    r[8] and ('(' .. r[8]) or ('[' .. release .. '|d|'), '(' .. release .. '|m')
  redis.call('HSET', K_ROOMS, p .. 'state', 'sold_out', p .. 'sold_out_ms', now)
  for schedule in string.gmatch(r[10] or '', '%S+') do
    redis.call('HDEL', K_SCHEDULES, schedule .. ':room')
  end
  emit(step, 'room_sold_out', {'release', release, 'admitted', tonumber(r[9]) or 0,
    'waiting', waiting})
  return {OK, 'sold_out', drawn, lapsed, 0, 0}
end

-- 5. Admit in queue order, within the budget.
local budget = math.floor(takeable * factor_pm / 1000) - outstanding
local admitted = 0
-- The window's admissions so far (every driver's): a new window starts at its first step.
local window_start, in_window = tonumber(r[11]) or 0, tonumber(r[12]) or 0
if admit_window <= 0 or now >= window_start + admit_window then
  window_start, in_window = now, 0
end
if budget > 0 and in_window < admit_limit then
  local from = r[8] and ('(' .. r[8]) or ('[' .. release .. '|d|')
  local next_tickets = redis.call('ZRANGEBYLEX', K_QUEUE, from, '(' .. release .. '|m',
    'LIMIT', 0, math.min(budget, admit_limit - in_window))
  local position = tonumber(r[9]) or 0
  local expiry = now + token_ms
  for _, member in ipairs(next_tickets) do
    local ticket = string.match(member, '|([^|]+)$')
    local rec = cjson.decode(redis.call('HGET', K_TICKETS, ticket))
    local token = redis.sha1hex(nonce .. ticket)
    position = position + 1
    rec.k = token
    redis.call('HSET', K_TICKETS, ticket, cjson.encode(rec))
    redis.call('HSET', K_ROOMS, 'tok:' .. token, admission_text({release = release,
      ticket = ticket, account = rec.a, patient = rec.p, expiry = expiry, state = 'a'}))
    redis.call('ZADD', K_QUEUE, 0, token_prefix .. pad_due(expiry) .. '|' .. token)
    emit(step, 'room_admitted', {'release', release, 'ticket', ticket, 'account', rec.a,
      'patient', rec.p, 'position', position, 'expires', expiry})
  end
  admitted = #next_tickets
  if admitted > 0 then
    redis.call('HSET', K_ROOMS, p .. 'cursor', next_tickets[admitted], p .. 'admitted', position,
      p .. 'outstanding', outstanding + admitted, p .. 'window_ms', window_start,
      p .. 'window_n', in_window + admitted)
  end
end
return {OK, state, drawn, lapsed, admitted, takeable}
