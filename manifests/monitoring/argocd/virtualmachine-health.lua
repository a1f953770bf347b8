-- Argo CD health check for ironvisor.io/VirtualMachine. Install it as
-- resource.customizations.health.ironvisor.io_VirtualMachine in argocd-cm (see argocd-cm.yaml).
-- It reads the kstatus-style status: observedGeneration, the Ready and Scheduled conditions.
local hs = { status = "Progressing", message = "Waiting for the VM to be admitted and placed" }
if obj.status == nil then
  return hs
end

local function condition(kind)
  if obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.message = "Waiting for the VM's agent to act on generation " .. generation
  return hs
end

local phase = obj.status.phase
local ready = condition("Ready")
local scheduled = condition("Scheduled")
local strategy = (obj.spec and obj.spec.runStrategy) or "Always"

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.reason or fallback
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

if scheduled ~= nil and scheduled.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(scheduled, "Not scheduled")
  return hs
end
if phase == "Failed" or phase == "Unknown" then
  hs.status = "Degraded"
  hs.message = describe(ready, phase)
  return hs
end
if phase == "Running" and ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = "Running"
  return hs
end
if phase == "Stopped" and (strategy == "Halted" or strategy == "Manual" or strategy == "Once") then
  hs.status = "Suspended"
  hs.message = "Stopped (runStrategy " .. strategy .. ")"
  return hs
end
hs.message = describe(ready, phase or "Waiting for the agent")
return hs
