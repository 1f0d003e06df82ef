"""One rank of tests/python/test_distributed.py: joins a gloo group and measures windows on the fake GPUs.

python _dist_worker.py RANK WORLD INIT_FILE OUT_DIR HOSTS
HOSTS: how many hosts the ranks pretend to be on (JOULECAP_TEST_HOST_ID = rank // (WORLD // HOSTS)) for the
second tool; the first tool runs with the real host identity.  Writes OUT_DIR/rank<R>.json.  HOSTS 0: rank 1
leaves without calling stop().
"""

import datetime
import json
import os
import sys
import time

import torch.distributed as dist

rank, world, init_file, out_dir, hosts = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=world,
                        timeout=datetime.timedelta(seconds=60))

import joulecap  # noqa: E402
from joulecap.distributed import JobMeasurement  # noqa: E402

if hosts == 0:
    # A rank that leaves without calling stop(): rank 0's stop() must fail with a clear error, not hang.
    tool = joulecap.EnergyMeasurementTool(None)
    if rank != 0:
        os._exit(0)
    tool.start()
    try:
        tool.stop()
        err = None
    except joulecap.errors.StateError as e:
        err = str(e)
    with open(os.path.join(out_dir, "rank0.json"), "w") as f:
        json.dump({"error": err}, f)
    os._exit(0)


def summary(r):
    if isinstance(r, JobMeasurement):
        d = r.as_dict()
        d["rank_elapsed_s"] = {str(k): v for k, v in d["rank_elapsed_s"].items()}
        d["type"] = "job"
        d["rows"] = r.rows
        return d
    if isinstance(r, int):
        return {"type": "rows", "rows": r}
    return {"type": "local", "energy_j": r.energy_j, "elapsed_s": r.elapsed_s}


out = {"rank": rank}
# 1. The real host: every rank on this machine.
tool = joulecap.EnergyMeasurementTool(os.path.join(out_dir, "job.csv"))
out["gpus"] = tool.gpus
out["columns"] = tool.columns
res = []
for i in range(2):
    tool.start("w%d" % i)
    time.sleep(0.3)
    res.append(summary(tool.stop()))
with tool.window("ctx") as w:
    time.sleep(0.2)
res.append(summary(w.result))
tool.close()
out["one_host"] = res

# 2. The same ranks as HOSTS hosts (the test-only override), and the asynchronous tool.
os.environ["JOULECAP_TEST_HOST_ID"] = "host%d" % (rank // (world // hosts))
tool = joulecap.EnergyMeasurementTool(os.path.join(out_dir, "job2.csv"))
tool.start()
time.sleep(0.3)
out["two_hosts"] = summary(tool.stop())
tool.close()

atool = joulecap.AsynchronousMeasurementTool(os.path.join(out_dir, "series.csv"))
atool.start(0.1)
time.sleep(0.4)
out["async"] = summary(atool.stop())

# 3. distributed=False: this process alone, its own file.
solo = joulecap.EnergyMeasurementTool(os.path.join(out_dir, "solo%d.csv" % rank), distributed=False)
solo.start()
out["solo"] = summary(solo.stop())
solo.close()

with open(os.path.join(out_dir, "rank%d.json" % rank), "w") as f:
    json.dump(out, f)
dist.destroy_process_group()
