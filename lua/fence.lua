--[[
  fence: compare the tag's sequence with the highest one Postgres has recorded and,
  if Redis is behind (an empty store, a failover that lost writes, a restore from an
  old file), fence the tag: every state change is refused until `rebuild` restores it
  from Postgres. A healthy store is never behind: Postgres only learns sequence numbers
  from Redis's own events.

  KEYS[1..11] the department-day tag's keys, see includes/tag.lua
  ARGV[1]  postgres_seq  the highest seq Postgres recorded for the tag
  ARGV[2]  tag           the tag's name (written when the store has lost even the meta)

  Returns {code, redis_seq, fenced}
    0   OK                {0, seq, 1} fenced now or already; {0, seq, 0} in step
                          (Redis seq >= Postgres seq)
   -20  invalid_argument  {-20, 0, 0}
  Emits: nothing (the tag's outbox may itself be stale).
]]
--- @include "codes"

local K_META = KEYS[1]
local postgres_seq = tonumber(ARGV[1])
if not postgres_seq or ARGV[2] == '' then
  return {E_INVALID_ARGUMENT, 0, 0}
end
local redis_seq = tonumber(redis.call('HGET', K_META, 'seq')) or 0
if redis.call('HGET', K_META, 'fenced') == '1' then
  return {OK, redis_seq, 1}
end
if redis_seq < postgres_seq then
  redis.call('HSET', K_META, 'fenced', '1', 'tag', ARGV[2])
  return {OK, redis_seq, 1}
end
return {OK, redis_seq, 0}
