//! Fitbit-shaped answers for a few paths of the Web API (profile, a day's
//! activities, devices), so that services developed against `simulate`
//! parse what Fitbit sends rather than a placeholder. The values are
//! fixed examples in the shapes of Fitbit's documentation.

use serde_json::{json, Value};

/// The body for `path`, if it is one of the Fitbit paths the simulator
/// knows (for the current user, `-`).
pub(crate) fn answer(path: &str) -> Option<Value> {
    let rest = path
        .strip_prefix("/1/user/-/")
        .or_else(|| path.strip_prefix("/1.2/user/-/"))?;
    match rest {
        "profile.json" => Some(profile()),
        "devices.json" => Some(devices()),
        _ => {
            let date = rest
                .strip_prefix("activities/date/")?
                .strip_suffix(".json")?;
            Some(activities(date))
        }
    }
}

fn profile() -> Value {
    json!({
        "user": {
            "age": 34,
            "avatar": "https://static0.fitbit.com/images/profile/defaultProfile_100.png",
            "averageDailySteps": 8312,
            "dateOfBirth": "1991-04-12",
            "displayName": "Sim U.",
            "distanceUnit": "METRIC",
            "encodedId": "SIM123",
            "firstName": "Sim",
            "fullName": "Sim User",
            "gender": "NA",
            "height": 175.0,
            "heightUnit": "METRIC",
            "lastName": "User",
            "locale": "en_US",
            "memberSince": "2020-01-01",
            "strideLengthRunning": 105.2,
            "strideLengthWalking": 72.6,
            "timezone": "UTC",
            "weight": 70.5,
            "weightUnit": "METRIC"
        }
    })
}

fn activities(date: &str) -> Value {
    json!({
        "activities": [{
            "activityId": 90013,
            "activityParentId": 90013,
            "activityParentName": "Walk",
            "calories": 204,
            "description": "Walking less than 2 mph, strolling very slowly",
            "distance": 2.1,
            "duration": 2_400_000,
            "hasStartTime": true,
            "isFavorite": false,
            "logId": 1_234_567_890,
            "name": "Walk",
            "startDate": date,
            "startTime": "08:00",
            "steps": 2900
        }],
        "goals": {
            "activeMinutes": 30,
            "caloriesOut": 2500,
            "distance": 8.05,
            "floors": 10,
            "steps": 10000
        },
        "summary": {
            "activityCalories": 812,
            "caloriesBMR": 1650,
            "caloriesOut": 2390,
            "distances": [
                { "activity": "total", "distance": 6.2 },
                { "activity": "tracker", "distance": 6.2 }
            ],
            "fairlyActiveMinutes": 18,
            "lightlyActiveMinutes": 190,
            "marginalCalories": 470,
            "sedentaryMinutes": 640,
            "steps": 8312,
            "veryActiveMinutes": 22
        }
    })
}

fn devices() -> Value {
    json!([{
        "battery": "High",
        "batteryLevel": 85,
        "deviceVersion": "Charge 6",
        "features": [],
        "id": "1234567890",
        "lastSyncTime": "2026-11-30T07:45:12.000",
        "mac": "AB12CD34EF56",
        "type": "TRACKER"
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_three_paths_and_nothing_else() {
        assert_eq!(
            answer("/1/user/-/profile.json").unwrap()["user"]["encodedId"],
            "SIM123"
        );
        let day = answer("/1/user/-/activities/date/2026-11-30.json").unwrap();
        assert_eq!(day["activities"][0]["startDate"], "2026-11-30");
        assert!(day["summary"]["steps"].is_number());
        assert_eq!(
            answer("/1/user/-/devices.json").unwrap()[0]["type"],
            "TRACKER"
        );
        for other in [
            "/1/user/-/sleep.json",
            "/1/load/3",
            "/sim/hop",
            "/1/user/-/activities/date/x",
        ] {
            assert!(answer(other).is_none(), "{other}");
        }
    }
}
