import struct

HEADER = struct.Struct(">II")
