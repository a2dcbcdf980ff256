"""python-hcl2 8.x on a small module: plain values need SerializationOptions(strip_string_quotes=True, explicit_blocks=False)."""
import json
import sys

import hcl2
from hcl2 import SerializationOptions

path = sys.argv[1] if len(sys.argv) > 1 else "tf/aws/main.tf"
opts = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
d = hcl2.load(open(path), serialization_options=opts)
print(json.dumps(d)[:900])
