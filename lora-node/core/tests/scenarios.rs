//! The node's behaviour scenarios (`lora_node_core::scenarios`), one test each. The same
//! functions run on a Cortex-M4 under QEMU (lora-node/qemu-tests).

use lora_node_core::scenarios;

macro_rules! scenario_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if let Err(failure) = scenarios::$name() {
                    panic!("{}: {failure}", stringify!($name));
                }
            }
        )*

        #[test]
        fn every_scenario_has_a_host_test() {
            let here = [$(stringify!($name)),*];
            let all: Vec<&str> = scenarios::ALL.iter().map(|s| s.name).collect();
            assert_eq!(all, here);
        }
    };
}

scenario_tests!(
    counter_never_reused_across_reboot,
    storage_failure_stops_transmissions,
    alarm_retried_until_acked_then_stops,
    an_alarms_end_carries_its_raises_id,
    alarm_gives_up_after_max_and_reports,
    duty_budget_respected,
    heartbeat_schedule,
    downlink_replay_refused,
    downlink_replay_refused_after_reboot,
    reports_on_change_and_periodically,
);
