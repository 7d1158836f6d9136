--[[
  reschedule_mark: the old booking's side of a move across tags (see reschedule_take).

    begin   mark the booking as moving to new_id until until_ms (after the checks a
            move makes of it); while marked, the patient cannot cancel it
    finish  the new booking exists: cancel the old one (reason "rescheduled", "to" =
            new_id) and drop the mark
    abort   the new booking will never exist (its step refused, or until_ms plus the
            clock margin is over and it is missing): drop the mark

  KEYS[1..11] the old booking's department-day tag's keys, see includes/tag.lua
  ARGV[1]  now_ms      logical clock in ms; 0 = the server's TIME
  ARGV[2]  rand_seed   seeds the anti-scalping delay of the freed unit
  ARGV[3]  mode        begin, finish or abort
  ARGV[4]  old_id
  ARGV[5]  new_id
  ARGV[6]  account_id  the caller's account; "" = a trusted caller
  ARGV[7]  until_ms    begin: the mark's end (ms); abort: the clock margin (ms): the
                       mark is dropped once now is past its end plus the margin, or at
                       once when -1 (the caller saw the take refused)
  ARGV[8]  max_moves   begin: the policy's limit
  ARGV[9]  force       begin: "1" = an operator's move (no deadline, no limit)
  ARGV[10] request_id  stamped on the events ("rid"); may be ""

  Returns {code, event_id, hold_json, rem, held, booked, wait, cap, extra}
    0   OK                      begin: marked; finish: cancelled; abort: mark dropped
    1   REPLAY                  begin: already marked for new_id (extra = its until_ms);
                                finish: already cancelled for new_id; abort: no such mark
   -17  store_fenced
   -7   hold_not_found
   -8   not_owner
   -13  hold_not_active         extra = its state (finish: not marked for new_id)
   -25  reschedule_in_progress  begin: marked for another move; abort: its time is not over
   -10  cancel_deadline_passed  extra = the deadline (ms)
   -24  reschedule_limit        extra = max_moves
   -20  invalid_argument
  Emits: finish: booking_cancelled. begin and abort change the record alone: the mark
    is not part of the durable record (the reschedule's own row in Postgres is).
]]
--- @include "tag"
--- @include "codes"
--- @include "clock"
--- @include "step"
--- @include "meta"
--- @include "holds"
--- @include "end_hold"
--- @include "rebook"

local step = new_step(now_ms(ARGV[1]), ARGV[2], ARGV[10])
local now = step.now
local mode, old_id, new_id, account = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local until_ms, max_moves, force = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9] == '1'
if old_id == '' or new_id == '' or not until_ms or not max_moves
  or (mode ~= 'begin' and mode ~= 'finish' and mode ~= 'abort') then
  return hold_reply(E_INVALID_ARGUMENT, nil, nil, 'argv')
end
if is_fenced() then
  return hold_reply(E_STORE_FENCED, nil, nil)
end

if mode == 'begin' then
  local rec = load_hold(old_id)
  if rec and rec.moving == new_id and rec.state == 'booked'
    and (account == '' or rec.account == account) then
    return hold_reply(REPLAY, nil, rec, rec.moving_until)
  end
  local refused, old, extra = move_refusal(old_id, account, now, max_moves, force)
  if refused then
    return hold_reply(refused, nil, old, extra)
  end
  old.moving, old.moving_until = new_id, until_ms
  return hold_reply(OK, nil, old, until_ms, save_hold(old))
end

local rec = load_hold(old_id)
if not rec then
  return hold_reply(E_HOLD_NOT_FOUND, nil, nil)
end
if account ~= '' and rec.account ~= account then
  return hold_reply(E_NOT_OWNER, nil, nil)
end
if mode == 'finish' then
  if rec.state == 'cancelled' and rec.to == new_id then
    return hold_reply(REPLAY, nil, rec)
  end
  if rec.state ~= 'booked' or rec.moving ~= new_id then
    return hold_reply(E_HOLD_NOT_ACTIVE, nil, rec, rec.state)
  end
  rec.moving, rec.moving_until, rec.to = nil, nil, new_id
  local event_id, json, counts = end_hold(step, rec, 'cancelled', 'rescheduled')
  return hold_reply(OK, event_id, rec, nil, json, counts)
end

-- abort
if rec.state ~= 'booked' or rec.moving ~= new_id then
  return hold_reply(REPLAY, nil, rec)
end
if until_ms >= 0 and now <= (tonumber(rec.moving_until) or 0) + until_ms then
  return hold_reply(E_RESCHEDULE_IN_PROGRESS, nil, rec, rec.moving_until)
end
rec.moving, rec.moving_until = nil, nil
return hold_reply(OK, nil, rec, nil, save_hold(rec))
