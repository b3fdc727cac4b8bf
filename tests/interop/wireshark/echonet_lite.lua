-- A minimal ECHONET Lite dissector (Wireshark 4.0 has none): the header and the properties
-- of format 1 (ECHONET Lite Specification Ver.1.14, Part II §3.2), on UDP 3610.
-- Used by tests/interop/test_tshark_broute.py: tshark -X lua_script:echonet_lite.lua ...
local p = Proto("echonet_lite", "ECHONET Lite")
local f = p.fields
f.ehd1 = ProtoField.uint8("echonet_lite.ehd1", "EHD1", base.HEX)
f.ehd2 = ProtoField.uint8("echonet_lite.ehd2", "EHD2", base.HEX)
f.tid = ProtoField.uint16("echonet_lite.tid", "TID", base.HEX)
f.seoj = ProtoField.uint24("echonet_lite.seoj", "SEOJ", base.HEX)
f.deoj = ProtoField.uint24("echonet_lite.deoj", "DEOJ", base.HEX)
f.esv = ProtoField.uint8("echonet_lite.esv", "ESV", base.HEX)
f.opc = ProtoField.uint8("echonet_lite.opc", "OPC", base.DEC)
f.epc = ProtoField.uint8("echonet_lite.epc", "EPC", base.HEX)
f.pdc = ProtoField.uint8("echonet_lite.pdc", "PDC", base.DEC)
f.edt = ProtoField.bytes("echonet_lite.edt", "EDT")

function p.dissector(buf, pinfo, tree)
  if buf:len() < 12 or buf(0, 1):uint() ~= 0x10 or buf(1, 1):uint() ~= 0x81 then
    return 0
  end
  pinfo.cols.protocol = "ECHONET Lite"
  local t = tree:add(p, buf())
  t:add(f.ehd1, buf(0, 1)); t:add(f.ehd2, buf(1, 1)); t:add(f.tid, buf(2, 2))
  t:add(f.seoj, buf(4, 3)); t:add(f.deoj, buf(7, 3)); t:add(f.esv, buf(10, 1))
  local opc = buf(11, 1):uint()
  t:add(f.opc, buf(11, 1))
  local pos = 12
  for _ = 1, opc do
    if pos + 2 > buf:len() then return pos end  -- (SetGet's second list is not read here)
    local pdc = buf(pos + 1, 1):uint()
    t:add(f.epc, buf(pos, 1)); t:add(f.pdc, buf(pos + 1, 1))
    if pdc > 0 then t:add(f.edt, buf(pos + 2, pdc)) end
    pos = pos + 2 + pdc
  end
  return pos
end

DissectorTable.get("udp.port"):add(3610, p)
