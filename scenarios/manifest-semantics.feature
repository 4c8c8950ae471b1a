@manifest
Feature: Kubernetes semantics of a cdk8s-plus Deployment
  `door-locks` (fixtures/manifests/door-locks.yaml, synthesized by fixtures/cdk8s) is a Deployment of two
  body-control replicas on one bus, configured by a ConfigMap through envFrom (auto-lock at 30 km/h instead
  of the built-in 15 km/h), with a run-to-completion init container and an exec liveness probe. The
  ConfigMap's Service is accepted and reported as not deployed.

  Background:
    Given the "door-locks" workload is running

  Scenario: Both replicas run after the init container completed
    Then the "door-locks" workload runs 2 replicas
    And within 500 ms "DoorLockState" is seen

  Scenario: The ConfigMap's auto-lock threshold is what the replicas use
    When "VehicleSpeed" is sent with Speed=20, SpeedValid=1
    Then no "DoorLockState" has AutoLocked=1 for 500 ms
    When "VehicleSpeed" is sent with Speed=35, SpeedValid=1
    Then within 500 ms "DoorLockState" has Locked=1, AutoLocked=1

  Scenario: The liveness probe passes and no replica is restarted
    Then the "door-locks" workload stays running for 5 s
    And the "door-locks" workload has been restarted 0 times

  Scenario: Killed replicas are restarted by the Deployment's policy
    When the "door-locks" workload is killed
    Then the "door-locks" workload is restarted by its restart policy within 3 s
    And the "door-locks" workload runs 2 replicas
