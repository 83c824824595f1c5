"""Training on RunPod GPU pods (`jobs launch`): the launcher's side of a pod run.

  launch.py   estimate at the live price, render the pod's config once, upload, create the pod
  follow.py   follow the pod and its volume to the run's end: cost cap, relaunch, give-up, fetch
  relaunch.py a pod gone before the run ended: lost work, a new pod on the same volume, or the give-up
  billing.py  what an attempt costs (creation to termination) and its start deadline
  owner.py    who follows a run: one process at a time holds its lock (the service follows runs nobody does)
  selfend.py  a pod ending itself (its run over on the volume, or its deadline) with its pod-scoped key
  verbs.py    `jobs status | logs | fetch | follow RUN` for a launched run
  pods.py     what those share: the RunPod client, a pod's spec and attempt, the volume as seen from here
  config.py   the config a pod runs: published by the launcher, taken up as it is by `jobs run-config`
  runpod.py   RunPod's GraphQL API (the operations we use, their shapes)
  rest.py     RunPod's REST API v2 for pods (the default; RUNPOD_API=graphql for GraphQL), GraphQL's shapes
  volume.py   the pod's volume from here: a local directory or a network volume through RunPod's S3 API
  bundle.py   our code and the wheels it adds to Axolotl's stack, on the volume for Axolotl's own image
  stored.py   the completed run's files into the artifact store, from the pod (and back, for promote)

The pod itself runs docker/entrypoint.sh, which trains through the same code as a local run (jobs/run.py).
Cancel is jobs/cancel.py, one for local and pod runs.
"""
