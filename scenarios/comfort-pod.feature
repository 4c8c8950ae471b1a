@pod
Feature: Comfort pod: two containers on one bus
  The comfort pod runs the climate and the central-locking controllers side by side. Both join the same
  vehicle bus and become ready through exec readiness probes.

  Background:
    Given the "comfort" workload is running

  Scenario: Both containers' heartbeats share the bus
    Then "HvacStatus" is sent every 100 ms ± 25%
    And "DoorLockState" is sent every 200 ms ± 25%

  Scenario: Both controllers answer on the shared bus
    When "LockRequest" is sent with Command=1
    And "ClimateRequest" is sent with TargetTemp=22, FanLevel=5, AcOn=0
    Then within 300 ms "DoorLockState" has Locked=1
    And within 300 ms "HvacActuators" has FanPwm=70

  @fault @bitrate
  Scenario: A babbling node at the lowest priority does not silence the pod
    Given the bus runs at 500 kbit/s
    When a babbling node sends 7FF#FFFFFFFFFFFFFFFF for 4 s
    Then "HvacStatus" is sent every 100 ms ± 25%
    When "LockRequest" is sent with Command=1
    Then within 300 ms "DoorLockState" has Locked=1
    And no frames were dropped
