@can-utils
Feature: Debian's can-utils on the scenario bus
  candump and cansend from Debian's can-utils (2020.11; dynamically linked, unmodified) run as containers of
  the pods in fixtures/manifests/can-utils.yaml. The images can-utils/candump and can-utils/cansend are the
  host's /usr/bin/candump and /usr/bin/cansend, through the `dir` workload source fixtures/can-utils. Like any
  AGL tool they open the pod's bus as the SocketCAN interface can0.

  Scenario: A candump sidecar logs the wiper ECU's heartbeat and the commands it gets
    Given the "wiper-candump" workload is running
    Then the "candump" log of "wiper-candump" shows "can0 3B0#" within 1 s
    When "WiperCommand" is sent with Mode=3
    Then within 300 ms "WiperStatus" has Mode=3, Speed=3
    And the "candump" log of "wiper-candump" shows "can0 140#03" within 1 s
    And the "candump" log of "wiper-candump" shows "can0 3B0#1B" within 1 s

  Scenario: cansend locks the doors through the body-control module, candump logs its answers
    Given the "body-control" workload is running
    # Each time counts from the deploy step, which runs the cansend init container and starts candump; on a
    # board over ssh that alone takes a few seconds.
    When the "lock-by-cansend" workload is deployed
    Then within 8 s "LockResponse" has Result=0, Command=1
    And within 8 s "DoorLockState" has Locked=1
    And the "candump" log of "lock-by-cansend" shows "can0 320#01" within 8 s
    When the frame 120#02 is sent
    Then within 300 ms "LockResponse" has Result=0, Command=2
    And the "candump" log of "lock-by-cansend" shows "can0 321#08" within 1 s
