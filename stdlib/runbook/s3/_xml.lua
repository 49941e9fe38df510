-- Just enough XML for S3's answers (ListObjectsV2, multipart, errors):
-- the text of elements by name, entities decoded, and escaping for the
-- CompleteMultipartUpload body. S3's XML has no attributes we need, no
-- CDATA and no nesting of same-named elements.
local M = {}

local ENTITIES = { amp = "&", lt = "<", gt = ">", quot = '"', apos = "'" }

function M.unescape(s)
  return (s:gsub("&(#?x?)(%w+);", function(kind, name)
    if kind == "#" then return utf8.char(tonumber(name)) end
    if kind == "#x" then return utf8.char(tonumber(name, 16)) end
    return ENTITIES[name] or ("&" .. name .. ";")
  end))
end

function M.escape(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&apos;" }))
end

--- The raw inner text of every <tag>...</tag> (and "" for <tag/>), in order.
function M.blocks(xml, tag)
  local out, pos = {}, 1
  local open = "<" .. tag
  while true do
    local s, e, rest = xml:find(open .. "([%s/>])", pos)
    if not s then break end
    if rest == "/" and xml:sub(e + 1, e + 1) == ">" then
      out[#out + 1] = ""
      pos = e + 2
    else
      local gt = xml:find(">", e, true)
      if not gt then break end
      if xml:sub(gt - 1, gt - 1) == "/" then
        out[#out + 1] = ""
        pos = gt + 1
      else
        local cs, ce = xml:find("</" .. tag .. ">", gt + 1, true)
        if not cs then break end
        out[#out + 1] = xml:sub(gt + 1, cs - 1)
        pos = ce + 1
      end
    end
  end
  return out
end

--- The decoded text of the first <tag>, or nil.
function M.text(xml, tag)
  local b = M.blocks(xml, tag)[1]
  return b and M.unescape(b) or nil
end

return M
