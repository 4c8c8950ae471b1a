@body
Feature: Body control: central locking
  The BCM locks and unlocks on key-fob requests, refuses to unlock while the vehicle moves,
  locks automatically above 15 km/h and reports the lock state every 200 ms.

  Background:
    Given the "body-control" workload is running

  Scenario: Lock state heartbeat every 200 ms
    Then "DoorLockState" is sent every 200 ms ± 25%
    And no frames were dropped

  Scenario: Lock on request
    When "LockRequest" is sent with Command=1
    Then within 300 ms "LockResponse" has Result=0, Command=1
    And within 300 ms "DoorLockState" has Locked=1, AutoLocked=0

  Scenario: Unlock while stationary
    Given "LockRequest" is sent with Command=1
    And "VehicleSpeed" is sent with Speed=0, SpeedValid=1
    When "LockRequest" is sent with Command=2
    Then within 300 ms "LockResponse" has Result=0, Command=2
    And within 300 ms "DoorLockState" has Locked=0

  Scenario: Unlock is refused while the vehicle moves
    Given "LockRequest" is sent with Command=1
    And "VehicleSpeed" is sent with:
      | signal     | value |
      | Speed      | 50    |
      | SpeedValid | 1     |
    When "LockRequest" is sent with Command=2
    Then within 300 ms "LockResponse" has Result=1, Command=2
    And no "DoorLockState" has Locked=0 for 500 ms
    And the latest "DoorLockState" has Locked=1, LastReject=1

  Scenario: Doors lock automatically above 15 km/h
    When "VehicleSpeed" is sent with Speed=20, SpeedValid=1
    Then within 300 ms "DoorLockState" has Locked=1, AutoLocked=1
    And no "LockResponse" is seen for 300 ms

  Scenario: No automatic lock at walking pace
    When "VehicleSpeed" is sent with Speed=10, SpeedValid=1
    Then no "DoorLockState" has Locked=1 for 500 ms

  Scenario: A speed marked invalid is ignored
    When "VehicleSpeed" is sent with Speed=80, SpeedValid=0
    Then no "DoorLockState" has Locked=1 for 500 ms

  Scenario: An invalid lock command is refused
    When the frame 120#03 is sent
    Then within 300 ms "LockResponse" has Result=2, Command=3
    And within 300 ms "DoorLockState" has LastReject=2

  Scenario: Raw frames: lock then unlock in one burst
    When these frames are sent:
      | frame                   |
      | 100#0000010000000000    |
      | 120#01                  |
      | 120#02                  |
    Then these frames are seen in order within 1 s:
      | frame  |
      | 321#04 |
      | 321#08 |

  @lifecycle
  Scenario: Lock state is lost when the BCM crashes and is restarted
    Given "LockRequest" is sent with Command=1
    When the "body-control" workload is killed
    Then the "body-control" workload is restarted by its restart policy within 3 s
    And within 2 s "DoorLockState" has Locked=0

  @lifecycle
  Scenario: A BCM that exits cleanly is not restarted
    When the "body-control" workload is stopped
    Then the "body-control" workload stays exited for 1 s
    And the "body-control" workload has been restarted 0 times

  @fault
  Scenario: A late vehicle speed delays the automatic lock
    Given "VehicleSpeed" frames are delayed by 200 ms ± 20 ms
    When "VehicleSpeed" is sent with Speed=20, SpeedValid=1
    Then no "DoorLockState" has Locked=1 for 150 ms
    And within 600 ms "DoorLockState" has Locked=1, AutoLocked=1

  @fault
  Scenario: A lost lock request is answered once the key fob repeats it
    Given the next 1 "LockRequest" frames are lost
    When "LockRequest" is sent with Command=1
    Then no "LockResponse" is seen for 300 ms
    When "LockRequest" is sent with Command=1
    Then within 300 ms "LockResponse" has Result=0, Command=1
    And the faults affected 1 frame
