@hvac
Feature: HVAC controller
  The climate ECU turns climate requests and cabin temperature into blower, compressor and heater
  commands, and reports its state in a 100 ms heartbeat.

  Background:
    Given the "hvac" workload is running

  Scenario: Status heartbeat every 100 ms
    Then "HvacStatus" is sent every 100 ms ± 25%

  Scenario: Software version is announced once at start
    Then the latest "DiagInfo" has SwVersion=258

  Scenario Outline: Fan level <level> drives the blower at <pwm> %
    When "ClimateRequest" is sent with TargetTemp=21, FanLevel=<level>, AcOn=0
    Then within 300 ms "HvacActuators" has FanPwm=<pwm>, Compressor=0
    And within 300 ms "HvacStatus" has FanLevel=<level>

    Examples:
      | level | pwm |
      | 1     | 20  |
      | 3     | 40  |
      | 7     | 100 |

  Scenario: Cooling a hot cabin switches the compressor on
    When "CabinTemperature" is sent with CabinTemp=26.5
    And "ClimateRequest" is sent with:
      | signal     | value |
      | TargetTemp | 21    |
      | FanLevel   | 3     |
      | AcOn       | 1     |
    Then within 300 ms "HvacActuators" has FanPwm=40, Compressor=1, Heater=0
    And within 300 ms "HvacStatus" has State=3

  Scenario: Heating a cold cabin switches the heater on
    When "CabinTemperature" is sent with CabinTemp=14
    And "ClimateRequest" is sent with TargetTemp=22, FanLevel=2, AcOn=0
    Then within 300 ms "HvacActuators" has Heater=1, Compressor=0
    And within 300 ms "HvacStatus" has State=2

  Scenario: The compressor keeps running inside the hysteresis band
    When "CabinTemperature" is sent with CabinTemp=26
    And "ClimateRequest" is sent with TargetTemp=21, FanLevel=3, AcOn=1
    Then within 300 ms "HvacActuators" has Compressor=1
    When "CabinTemperature" is sent with CabinTemp=21.2
    Then no "HvacActuators" has Compressor=0 for 400 ms
    When "CabinTemperature" is sent with CabinTemp=20.4
    Then within 300 ms "HvacActuators" has Compressor=0

  Scenario: A request with an invalid fan level is rejected
    When the frame 200#2A0900 is sent
    Then no "HvacActuators" is seen for 500 ms
    And the latest "HvacStatus" has FanLevel=0
    And the "hvac" workload logs "request_rejected" within 1 s

  Scenario: Switching the blower off forces the compressor off
    Given "CabinTemperature" is sent with CabinTemp=28
    And "ClimateRequest" is sent with TargetTemp=20, FanLevel=4, AcOn=1
    When "ClimateRequest" is sent with TargetTemp=20, FanLevel=0, AcOn=1
    Then within 300 ms "HvacActuators" has FanPwm=0, Compressor=0, Heater=0

  @fault
  Scenario: A silent cabin sensor is reported as a fault and recovers
    When "CabinTemperature" is sent with CabinTemp=25
    Then within 3 s "HvacStatus" has State=4
    And the "hvac" workload logs "sensor_fault" within 1 s
    When "CabinTemperature" is sent with CabinTemp=25
    Then within 500 ms "HvacStatus" has State!=4

  @lifecycle
  Scenario: The heartbeat resumes after a restart
    When the "hvac" workload is restarted
    Then within 3 s "HvacStatus" is seen
    And "HvacStatus" is sent every 100 ms ± 25%

  @lifecycle
  Scenario: A crashed controller is restarted by its Deployment
    When the "hvac" workload is killed
    Then the "hvac" workload is restarted by its restart policy within 3 s
    And within 3 s "HvacStatus" is seen
    And the "hvac" workload has been restarted 1 time

  @lifecycle
  Scenario: A stopped controller exits cleanly and goes silent
    When the "hvac" workload is stopped
    Then the "hvac" workload exits with code 0 within 3 s
    And no "HvacStatus" is seen for 500 ms

  @fault @replay
  Scenario: Losing every cabin temperature frame trips the sensor timeout
    Given the trace "fixtures/traces/cabin-sensor.log" is replayed looped
    And "ClimateRequest" is sent with TargetTemp=21, FanLevel=3, AcOn=1
    Then within 500 ms "HvacStatus" has State=3
    When 100% of "CabinTemperature" frames are lost
    Then within 3 s "HvacStatus" has State=4
    And the "hvac" workload logs "sensor_fault" within 1 s
    When the faults are cleared
    Then within 500 ms "HvacStatus" has State=3

  @fault
  Scenario: Bus error frames do not disturb a controller that filters them
    When an error frame "bus-error" is injected 20 times
    And an error frame "controller" is injected
    And "ClimateRequest" is sent with TargetTemp=21, FanLevel=3, AcOn=0
    Then within 300 ms "HvacActuators" has FanPwm=40
    And "HvacStatus" is sent every 100 ms ± 25%

  @fault
  Scenario: The controller's link is cut and comes back
    Given the link of "hvac-controller" is cut (bus-off) for 1 s
    Then no "HvacStatus" is seen for 700 ms
    And within 2 s "HvacStatus" is seen
    And the faults affected at least 5 frames

  @replay
  Scenario: A recorded cabin warm-up drives the controller
    When the trace "fixtures/traces/hvac-cabin-warmup.log" is replayed
    Then within 300 ms "HvacActuators" has FanPwm=40, Compressor=1
    And within 300 ms "HvacStatus" has State=3

  @replay
  Scenario: The same warm-up from a Vector ASC trace at twice the speed, sensor and HMI only
    When the trace "fixtures/traces/hvac-cabin-warmup.asc" is replayed at 2x speed with only ids 0x200, 0x210
    Then within 300 ms "HvacActuators" has FanPwm=40, Compressor=1
    And within 300 ms "HvacStatus" has State=3
