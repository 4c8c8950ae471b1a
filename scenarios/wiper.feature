@wiper
Feature: Windshield wiper ECU (plain C on SocketCAN)
  wiper-ecu (fixtures/c/wiper-ecu) is written in C against the plain SocketCAN API and built by the harness
  with gcc -static. It turns the stalk's WiperCommand, the rain sensor and the motor current into a wiper
  speed and reports it in the WiperStatus heartbeat every 100 ms. The Deployment (fixtures/manifests/wiper.yaml)
  keeps its built-in settings: a 1 s command timeout once a first command arrived, 8 A blocked current.

  Background:
    Given the "wiper" workload is running

  Scenario: Parked at start, with a heartbeat every 100 ms and no timeout before a first command
    Then "WiperStatus" is sent every 100 ms ± 25%
    And the latest "WiperStatus" has Mode=0, Speed=0, Fault=0
    And no "WiperFault" is seen for 1500 ms

  Scenario Outline: The stalk in mode <mode> runs the wiper at speed <speed>
    When "WiperCommand" is sent with Mode=<mode>
    Then within 300 ms "WiperStatus" has Mode=<mode>, Speed=<speed>, Fault=0
    And the "wiper" workload logs "mode_changed" within 1 s

    Examples:
      | mode | speed |
      | 1    | 1     |
      | 2    | 2     |
      | 3    | 3     |

  Scenario: Switching the stalk back to off parks the wiper
    When "WiperCommand" is sent with Mode=3
    Then within 300 ms "WiperStatus" has Speed=3
    When "WiperCommand" is sent with Mode=0
    Then within 300 ms "WiperStatus" has Mode=0, Speed=0, Fault=0
    And the "wiper" workload logs "speed_changed" within 1 s

  Scenario: An invalid stalk position is rejected and changes nothing
    When "WiperCommand" is sent with Mode=2
    Then within 300 ms "WiperStatus" has Mode=2, Speed=2
    When the frame 140#06 is sent
    Then the "wiper" workload logs "command_rejected" within 1 s
    And the latest "WiperStatus" has Mode=2, Speed=2
    And no "WiperStatus" has Mode=6 for 300 ms

  Scenario Outline: In auto mode a rain intensity of <intensity> % sets speed <speed>
    When "WiperCommand" is sent with Mode=4
    And "RainSensor" is sent with RainIntensity=<intensity>, RainValid=1
    Then within 300 ms "WiperStatus" has Mode=4, Speed=<speed>
    And no "WiperStatus" has Speed!=<speed> for 300 ms

    Examples:
      | intensity | speed |
      | 0         | 0     |
      | 25        | 1     |
      | 55        | 2     |
      | 90        | 3     |

  Scenario: In auto mode without a valid rain reading the wiper runs at interval
    When "WiperCommand" is sent with Mode=4
    And "RainSensor" is sent with RainIntensity=90, RainValid=0
    Then within 300 ms "WiperStatus" has Mode=4, Speed=1
    And no "WiperStatus" has Speed=3 for 300 ms

  @fault
  Scenario: A silent stalk puts a running wiper into the low-speed safe state until it is back
    When "WiperCommand" is sent with Mode=3
    Then within 300 ms "WiperStatus" has Mode=3, Speed=3, Fault=0
    And within 3 s "WiperFault" has FaultCode=1, Active=1
    And within 3 s "WiperStatus" has Mode=3, Speed=2, Fault=1
    And the "wiper" workload logs "command_timeout" within 1 s
    When "WiperCommand" is sent with Mode=3
    Then within 300 ms "WiperFault" has FaultCode=1, Active=0
    And within 300 ms "WiperStatus" has Mode=3, Speed=3, Fault=0

  @fault
  Scenario: A silent stalk leaves a parked wiper parked
    When "WiperCommand" is sent with Mode=0
    Then within 3 s "WiperStatus" has Mode=0, Speed=0, Fault=1
    And no "WiperStatus" has Speed!=0 for 300 ms

  @fault
  Scenario: A blocked motor is switched off until the stalk selects off
    When "WiperCommand" is sent with Mode=2
    And "WiperMotor" is sent with MotorCurrent=3
    Then within 300 ms "WiperStatus" has Mode=2, Speed=2
    And no "WiperFault" is seen for 300 ms
    When "WiperMotor" is sent with MotorCurrent=12.5
    Then within 300 ms "WiperFault" has FaultCode=2, Active=1
    And within 300 ms "WiperStatus" has Mode=2, Speed=0, Fault=2
    And the "wiper" workload logs "motor_blocked" within 1 s
    When "WiperCommand" is sent with Mode=2
    Then no "WiperStatus" has Speed=2 for 300 ms
    When "WiperCommand" is sent with Mode=0
    Then within 300 ms "WiperFault" has FaultCode=2, Active=0
    And within 300 ms "WiperStatus" has Mode=0, Speed=0, Fault=0
    When "WiperCommand" is sent with Mode=2
    Then within 300 ms "WiperStatus" has Mode=2, Speed=2, Fault=0

  Scenario: Frames the ECU filters out never reach it
    The ECU's CAN_RAW_FILTER passes standard-id data frames 0x140, 0x150 and 0x160 only: a neighbouring id,
    an id one bit off, the same id as an extended or a remote frame and other ECUs' traffic stay in the
    kernel (RxCounter counts what the socket delivered).
    When these frames are sent:
      | frame            |
      | 141#03           |
      | 340#03           |
      | 00000140#03      |
      | 140#R            |
      | 200#2A0300       |
      | 7FF#FFFFFFFF     |
    Then no "WiperStatus" has Speed!=0 for 500 ms
    And the latest "WiperStatus" has Mode=0, Speed=0, Fault=0, RxCounter=0
    When the frame 140#03 is sent
    Then within 300 ms "WiperStatus" has Mode=3, Speed=3, RxCounter=1

  @lifecycle
  Scenario: A killed ECU is restarted by its Deployment and comes back parked
    When "WiperCommand" is sent with Mode=3
    Then within 300 ms "WiperStatus" has Speed=3
    When the "wiper" workload is killed
    Then the "wiper" workload is restarted by its restart policy within 3 s
    And within 3 s "WiperStatus" has Mode=0, Speed=0, Fault=0, RxCounter=0
    And the "wiper" workload has been restarted 1 time
    And no "WiperStatus" has Speed!=0 for 500 ms

  @lifecycle
  Scenario: SIGTERM stops the ECU cleanly
    When the "wiper" workload is stopped
    Then the "wiper" workload exits with code 0 within 3 s
    And the "wiper" workload logs "stopped" within 1 s
    And no "WiperStatus" is seen for 500 ms
