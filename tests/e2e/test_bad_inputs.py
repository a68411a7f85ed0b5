import time

from cotune.chain.clients.coordinator import ContributionStatus


def test_proto(env, eval_bytes, clean_files, bases):
    t = time.perf_counter()
    bases('cotune-tiny')
    print('bases', time.perf_counter() - t)
    t = time.perf_counter()
    s = env.open_session(3, eval_set=eval_bytes)
    a, b, bad = s.parties
    s.submit_clean(a, clean_files[0])
    s.submit_clean(b, clean_files[1])
    s.upload_and_commit(bad, s.encrypt(bad, b"not json\n{}\n"))
    print("setup", time.perf_counter() - t)
    t = time.perf_counter()
    rec = s.run()
    print("run", time.perf_counter() - t, rec.stage, rec.error, rec.result.get("seconds"))
    for d in rec.result["decisions"]:
        print(d["contributor"], d["reason"], d["score"])
    print(s.status(bad))
    assert s.status(bad) is ContributionStatus.SLASHED
