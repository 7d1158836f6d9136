--[[
  patient_holds: the tag's index of each patient's open holds and bookings (for the
  one-per-day rule), in the patients hash.

  Provides:
    patient_holds(patient) -> {hold_id, ...}
    set_patient_holds(patient, ids)         an empty list deletes the entry
    add_patient_hold(patient, hold_id)
    remove_patient_hold(patient, hold_id)
  Expects: tag (K_PATIENTS).
]]
--- @include "tag"

local function patient_holds(patient)
  local raw = redis.call('HGET', K_PATIENTS, patient)
  local ids = {}
  if raw then
    for id in string.gmatch(raw, '%S+') do
      ids[#ids + 1] = id
    end
  end
  return ids
end

local function set_patient_holds(patient, ids)
  if #ids == 0 then
    redis.call('HDEL', K_PATIENTS, patient)
  else
    redis.call('HSET', K_PATIENTS, patient, table.concat(ids, ' '))
  end
end

local function add_patient_hold(patient, hold_id)
  local ids = patient_holds(patient)
  ids[#ids + 1] = hold_id
  set_patient_holds(patient, ids)
end

local function remove_patient_hold(patient, hold_id)
  local kept = {}
  for _, id in ipairs(patient_holds(patient)) do
    if id ~= hold_id then
      kept[#kept + 1] = id
    end
  end
  set_patient_holds(patient, kept)
end
