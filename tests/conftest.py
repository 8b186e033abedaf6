import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# The tests run small models, often two processes at once (a server and its client, Ray workers): one
# intra-op thread each keeps 2-core machines from oversubscription, where torch's spinning threads
# make a 30 ms UNet call take seconds.
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
