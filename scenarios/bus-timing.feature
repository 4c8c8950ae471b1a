@bitrate
Feature: Bus timing: a virtual bus with a bitrate behaves like a physical one
  With a bitrate the hub serialises frames by their length on the wire (bit stuffing counted at worst
  case unless said otherwise), arbitrates by id when several nodes want the bus, and stamps each frame at
  its end of frame. An 8-byte standard frame is 135 bits at worst (3-bit intermission included): a
  1 Mbit/s bus carries at most 7,407 of them a second.

  Background:
    Given the "hvac" workload is running

  Scenario: A saturated 1 Mbit/s bus carries at most 7,407 worst-case 8-byte frames a second
    Given the bus runs at 1 Mbit/s
    When a babbling node sends 7FF#FFFFFFFFFFFFFFFF for 500 ms
    Then 3600 to 3705 frames with id 0x7FF are seen in 600 ms
    And "HvacStatus" is sent every 100 ms ± 25%

  Scenario: A higher-priority babbler wins every arbitration and starves the heartbeat
    Given the bus runs at 125 kbit/s
    And a babbling node sends 000#00 for 1 s
    Then 0 to 1 frames with id 0x3A0 are seen in 800 ms
    And within 1.5 s "HvacStatus" is seen

  Scenario: The controller answers at 125 kbit/s as on an ideal bus
    Given the bus runs at 125 kbit/s
    When "ClimateRequest" is sent with TargetTemp=21, FanLevel=3, AcOn=0
    Then within 300 ms "HvacActuators" has FanPwm=40
    And "HvacStatus" is sent every 100 ms ± 25%
