--[[
  codes: the return codes shared by every script; inventory/errors.py mirrors them
  (LUA_CODES, and RateLimitedError for E_RATE_LIMITED).

  Every script answers an array whose first element is one of these: OK or REPLAY
  (a success; REPLAY = a retry answered with what the first call did) or an E_* code
  (a refusal: the step asked for did not happen; a hold found past its deadline on the
  way is expired first, a step of its own with its own event).

  Provides: OK, REPLAY and the E_* constants below.
  Expects: nothing.
]]
local OK = 0
local REPLAY = 1
local E_NOT_RELEASED = -1
local E_SCHEDULE_SUSPENDED = -2
local E_SCHEDULE_PAST = -3
local E_SOLD_OUT = -4
local E_PATIENT_RULE = -5
local E_HOLD_EXPIRED = -6
local E_HOLD_NOT_FOUND = -7
local E_NOT_OWNER = -8
local E_IDEMPOTENCY_KEY_REUSED = -9
local E_CANCEL_DEADLINE_PASSED = -10
local E_SCHEDULE_NOT_FOUND = -11
local E_SLOT_NOT_FOUND = -12
local E_HOLD_NOT_ACTIVE = -13
local E_ALREADY_EXTENDED = -14
local E_EXTENSION_LIMIT = -15
local E_CAPACITY_BELOW_TAKEN = -16
local E_STORE_FENCED = -17
local E_PATIENT_TOKEN_EXPIRED = -18
local E_ALREADY_CONFIRMED = -19
local E_INVALID_ARGUMENT = -20
local E_SLOT_SCHEDULE_MISMATCH = -21
local E_RATE_LIMITED = -22
local E_PATIENT_WEEKLY_LIMIT = -23
local E_RESCHEDULE_LIMIT = -24
local E_RESCHEDULE_IN_PROGRESS = -25
local E_RESCHEDULE_FEE_HIGHER = -26
-- The waiting room of a queued release (room_*.lua and reserve.lua's admission check),
-- numbered apart from the other new refusals.
local E_ADMISSION_REQUIRED = -40
local E_ADMISSION_TOKEN_INVALID = -41
local E_ADMISSION_TOKEN_EXPIRED = -42
local E_ADMISSION_TOKEN_USED = -43
local E_ADMISSION_TOKEN_NOT_YOURS = -44
local E_ROOM_NOT_FOUND = -45
local E_ROOM_NOT_OPEN = -46
local E_ROOM_SOLD_OUT = -47
local E_ROOM_CONFLICT = -48
local E_TICKET_NOT_FOUND = -49
-- the SMS login codes (login_code_issue, login_code_check)
local E_SMS_CODE_INVALID = -60
local E_SMS_CODE_EXPIRED = -61
local E_SMS_CODE_LOCKED = -62
-- The waitlist's (numbered apart, so that other new refusals can take -23 onwards).
local E_WAITLIST_UNITS_FREE = -31
local E_WAITLIST_ENTRY_NOT_FOUND = -32
local E_WAITLIST_OFFER_UNSETTLED = -33
