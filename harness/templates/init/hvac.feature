# A starter feature: edit it, add your own. `agl-parity list --steps` shows every step with an example.
@hvac
Feature: Climate control
  The climate ECU turns climate requests and the cabin temperature into blower, compressor and heater
  commands, and reports its state in a 100 ms heartbeat.

  Background:
    Given the "hvac" workload is running

  Scenario: Status heartbeat every 100 ms
    Then "HvacStatus" is sent every 100 ms ± 25%

  Scenario: Cooling a hot cabin switches the compressor on
    When "CabinTemperature" is sent with CabinTemp=26.5
    And "ClimateRequest" is sent with TargetTemp=21, FanLevel=3, AcOn=1
    Then within 300 ms "HvacActuators" has FanPwm=40, Compressor=1, Heater=0

  Scenario: A raw frame works too
    When the frame 200#2A0900 is sent
    Then no "HvacActuators" is seen for 500 ms
