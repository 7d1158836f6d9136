--[[
  meta: what a step reads from the tag's meta hash: its fence flag and its policy.

  Provides:
    is_fenced() -> bool         the tag's state was found older than Postgres (a lost or
                                rolled-back Redis): every state change is refused until a
                                rebuild from Postgres clears the flag
    policy_number(field) -> n   a policy field of the tag (0 when unset)
  Expects: tag (K_META).
]]
--- @include "tag"

local function is_fenced()
  return redis.call('HGET', K_META, 'fenced') == '1'
end

local function policy_number(field)
  return tonumber(redis.call('HGET', K_META, field)) or 0
end
