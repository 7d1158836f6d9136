--[[
  room: the keys of a department-day tag's waiting rooms, passed last, after the
  tag's own keys (includes/tag.lua), and what the room scripts share.
  inventory/store/keys.py builds them:
    KEYS[n-2] rooms     hash  "<release>:<field>" -> value; "tok:<token>" -> admission
    KEYS[n-1] tickets  hash  "<ticket>" -> JSON ticket; "<release>|<account>|<patient>"
                             -> ticket
    KEYS[n]   queue     zset  all scores 0, by member: "<release>|d|<key>|<ticket>"
                             (joined before T0, filed by its draw key as it joins),
                             "<release>|p|<ticket>" (joined before T0 under an earlier
                             version that drew at T0: room_advance draws it then),
                             "<release>|l|<seq:10>|<ticket>" (joined after T0),
                             "<release>|t|<expiry:15>|<token>" (outstanding tokens)
  Release fields: state (open | admitting | sold_out), t0_ms, opens_ms, seed_hash,
  secret (the seed until the draw), seed (revealed), factor_pm (over-admission, per
  mille), token_ms, schedules and slots (space-separated), joined, late, drawn,
  admitted, outstanding, used, lapsed, cursor (the last admitted queue member),
  drawn_ms, sold_out_ms, window_ms and window_n (the admission window's start and
  its admissions so far, room_advance's ARGV[7]).
  An admission "tok:<token>" is "<release> <ticket> <account> <patient> <expiry_ms>
  <state>", state a (admitted), u (used) or x (lapsed).

  Provides:
    K_ROOMS, K_TICKETS, K_QUEUE (constants: the key names above)
    room_field(release, field) -> string or nil
    draw_key(seed, ticket) -> hex   a drawn ticket's sort key: SHA1(seed .. ticket)
  Expects: the three keys last in KEYS; admission (parse_admission) comes with it.
]]
--- @include "admission"
local K_ROOMS, K_TICKETS, K_QUEUE = KEYS[#KEYS - 2], KEYS[#KEYS - 1], KEYS[#KEYS]

local function room_field(release, field)
  local value = redis.call('HGET', K_ROOMS, release .. ':' .. field)
  if value == false then
    return nil
  end
  return value
end

local function draw_key(seed, ticket)
  return redis.sha1hex(seed .. ticket)
end
