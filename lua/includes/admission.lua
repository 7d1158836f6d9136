--[[
  admission: an admission token's record, "tok:<token>" in the tag's rooms hash (see
  room.lua): "<release> <ticket> <account> <patient> <expiry_ms> <state>", state a
  (admitted, usable until expiry_ms), u (used by a reserve) or x (lapsed unused).

  Provides:
    parse_admission(raw) -> {release, ticket, account, patient, expiry, state} or nil
    admission_text(a) -> the record's text
  Expects: nothing.
]]

local function parse_admission(raw)
  if not raw then
    return nil
  end
  local release, ticket, account, patient, expiry, state =
    string.match(raw, '^(%S+) (%S+) (%S+) (%S+) (%d+) (%a)$')
  if not release then
    return nil
  end
  return {release = release, ticket = ticket, account = account, patient = patient,
    expiry = tonumber(expiry), state = state}
end

local function admission_text(a)
  return table.concat({a.release, a.ticket, a.account, a.patient, a.expiry, a.state}, ' ')
end
