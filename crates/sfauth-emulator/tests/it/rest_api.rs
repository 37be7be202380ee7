//! The REST slice as Salesforce's own CLI uses it: unknown paths, doubled slashes, records per
//! org, the select list, `columns=true`, limits, sobjects and describe.

use serde_json::{Value, json};

use crate::common::{Env, env, env_with};

const NOT_FOUND: &str =
    r#"[{"errorCode":"NOT_FOUND","message":"The requested resource does not exist"}]"#;

async fn token(env: &Env) -> String {
    env.password_login().await.field("access_token")
}

#[tokio::test]
async fn unknown_paths_answer_the_rest_404_after_the_session_check() {
    let env = env().await;
    let token = token(&env).await;
    for path in [
        "/services/data/v62.0/nope",
        "/services/data/v62.0/sobjects/Account/0015e000000EMU1AAO/extra",
        "/services/data/v62.0/tooling/nowhere",
        "/community/services/data/v62.0/nope",
        "/services/data/v99.0/limits",
    ] {
        let r = env.get_bearer(path, &token).await;
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        assert_eq!(r.body, NOT_FOUND, "{path}");
        assert!(r.header("content-type").starts_with("application/json"));
        let dead = env.get_bearer(path, "00Dnope!nope").await;
        assert_eq!(dead.status, 401, "{path}: {}", dead.body);
        assert_eq!(dead.json()[0]["errorCode"], "INVALID_SESSION_ID");
    }
    // Outside the REST API an unknown path stays a plain 404.
    let other = env.get("/nowhere").await;
    assert_eq!(other.status, 404);
    assert!(other.body.is_empty(), "{}", other.body);
}

#[tokio::test]
async fn a_doubled_slash_is_served_as_the_single_slash_path() {
    let env = env().await;
    let token = token(&env).await;
    let q = env
        .get_bearer(
            "//services/data/v62.0/query?q=SELECT+Id+FROM+Account",
            &token,
        )
        .await;
    assert_eq!(q.status, 200, "{}", q.body);
    assert_eq!(q.json()["totalSize"], 2);
    let versions = env.get("//services//data/").await;
    assert_eq!(versions.status, 200, "{}", versions.body);
    let token_endpoint = env
        .post("//services/oauth2/token", &[("grant_type", "nope")])
        .await;
    assert_eq!(token_endpoint.status, 400, "{}", token_endpoint.body);
    assert_eq!(token_endpoint.json()["error"], "unsupported_grant_type");
}

#[tokio::test]
async fn records_belong_to_their_org() {
    let env = env_with(|b| b.admin_api(true)).await;
    let seed_token = token(&env).await;
    let org = env
        .send(
            env.http
                .post(env.url("/__emulator/orgs"))
                .json(&json!({"name": "Globex"})),
        )
        .await;
    let org_id = org.json()["result"].as_str().unwrap().to_owned();
    let user = json!({"org_id": org_id, "username": "g@globex.test", "password": "pw", "security_token": "T"});
    env.send(env.http.post(env.url("/__emulator/users")).json(&user))
        .await
        .expect_ok();
    let app = json!({"org_id": org_id, "client_id": "3MVGglobex", "client_secret": "s", "flows": ["password"]});
    env.send(env.http.post(env.url("/__emulator/apps")).json(&app))
        .await
        .expect_ok();
    let other = env
        .token(&[
            ("grant_type", "password"),
            ("client_id", "3MVGglobex"),
            ("client_secret", "s"),
            ("username", "g@globex.test"),
            ("password", "pwT"),
        ])
        .await
        .field("access_token");
    let accounts = |token: String| {
        let env = &env;
        async move {
            env.get_bearer(
                "/services/data/v62.0/query?q=SELECT+Id,Name+FROM+Account",
                &token,
            )
            .await
            .json()
        }
    };
    let seed = accounts(seed_token.clone()).await;
    let second = accounts(other.clone()).await;
    assert_eq!(seed["totalSize"], 2);
    assert_eq!(seed["records"][0]["Name"], "Acme Corporation");
    assert_eq!(second["totalSize"], 1, "{second}");
    assert_eq!(second["records"][0]["Name"], "Globex");
    let seed_ids: Vec<&Value> = seed["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["Id"])
        .collect();
    let second_id = second["records"][0]["Id"].as_str().unwrap().to_owned();
    assert!(!seed_ids.contains(&&json!(second_id)));
    assert!(second_id.starts_with("001"));
    // Each org reads its own record by id, and not the other's.
    let path = |id: &str| format!("/services/data/v62.0/sobjects/Account/{id}");
    assert_eq!(env.get_bearer(&path(&second_id), &other).await.status, 200);
    assert_eq!(
        env.get_bearer(&path(&second_id), &seed_token).await.status,
        404
    );
    let seed_row = env.get_bearer(&path("0015e000000EMU1AAO"), &other).await;
    assert_eq!(seed_row.status, 404);
    assert_eq!(seed_row.body, NOT_FOUND);
    let contact = env
        .get_bearer(
            "/services/data/v62.0/query?q=SELECT+AccountId+FROM+Contact",
            &other,
        )
        .await
        .json();
    assert_eq!(contact["records"][0]["AccountId"], second_id.as_str());
    let organization = env
        .get_bearer(
            "/services/data/v62.0/query?q=SELECT+Id,Name+FROM+Organization",
            &other,
        )
        .await
        .json();
    assert_eq!(organization["records"][0]["Id"], org_id.as_str());
}

#[tokio::test]
async fn the_select_list_is_honoured() {
    let env = env().await;
    let token = token(&env).await;
    let query = |q: &'static str| {
        env.send(
            env.http
                .get(env.url("/services/data/v62.0/query"))
                .query(&[("q", q)])
                .bearer_auth(&token),
        )
    };
    // What `sf org display` asks (sfdx-core's organization query).
    let org = query(
        "SELECT Name, InstanceName, IsSandbox, TrialExpirationDate, NamespacePrefix FROM Organization",
    )
    .await;
    assert_eq!(org.status, 200, "{}", org.body);
    let record = &org.json()["records"][0];
    let keys: Vec<&str> = record
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut wanted = vec![
        "attributes",
        "Name",
        "InstanceName",
        "IsSandbox",
        "TrialExpirationDate",
        "NamespacePrefix",
    ];
    wanted.sort_unstable();
    assert_eq!(keys, wanted, "{record}");
    assert_eq!(record["IsSandbox"], false);
    assert_eq!(record["attributes"]["type"], "Organization");

    let ids = query("SELECT Id FROM Account").await.json();
    assert!(ids["records"][0].get("Name").is_none(), "{ids}");
    assert!(ids["records"][0]["Id"].is_string());
    // Case-insensitive names come back in their canonical case; unmodelled fields as null.
    let mixed = query("select name, industry from account limit 1")
        .await
        .json();
    assert_eq!(mixed["records"][0]["Name"], "Acme Corporation", "{mixed}");
    assert_eq!(mixed["records"][0]["industry"], Value::Null);
    let count = query("SELECT COUNT() FROM Account").await.json();
    assert_eq!(count["totalSize"], 2);
    assert_eq!(count["records"], json!([]));
    let empty = query("SELECT FROM Account").await;
    assert_eq!(empty.status, 400);
    assert_eq!(empty.json()[0]["errorCode"], "MALFORMED_QUERY");
}

#[tokio::test]
async fn columns_true_answers_column_metadata() {
    let env = env().await;
    let token = token(&env).await;
    let r = env
        .send(
            env.http
                .get(env.url("/services/data/v62.0/query"))
                .query(&[("q", "SELECT Id, Name FROM Account"), ("columns", "true")])
                .bearer_auth(&token),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["entityName"], "Account");
    assert_eq!(body["groupBy"], false);
    assert_eq!(body["idSelected"], true);
    assert_eq!(body["keyPrefix"], "001");
    let columns = body["columnMetadata"].as_array().unwrap();
    assert_eq!(columns.len(), 2);
    for key in [
        "aggregate",
        "apexType",
        "booleanType",
        "columnName",
        "custom",
        "displayName",
        "foreignKeyName",
        "insertable",
        "joinColumns",
        "numberType",
        "textType",
        "updatable",
    ] {
        assert!(
            columns[0].get(key).is_some(),
            "{key} missing in {}",
            columns[0]
        );
    }
    assert_eq!(columns[0]["columnName"], "Id");
    assert_eq!(columns[0]["apexType"], "Id");
    assert_eq!(columns[1]["columnName"], "Name");
    assert_eq!(columns[1]["textType"], true);
    assert_eq!(columns[1]["joinColumns"], json!([]));
    let user = env
        .send(
            env.http
                .get(env.url("/services/data/v62.0/query"))
                .query(&[("q", "SELECT Username FROM User"), ("columns", "true")])
                .bearer_auth(&token),
        )
        .await
        .json();
    assert_eq!(user["idSelected"], false);
    assert_eq!(user["keyPrefix"], "005");
}

#[tokio::test]
async fn limits_sobjects_and_describe() {
    let env = env().await;
    let token = token(&env).await;
    let limits = env.get_bearer("/services/data/v62.0/limits", &token).await;
    assert_eq!(limits.status, 200, "{}", limits.body);
    let daily = &limits.json()["DailyApiRequests"];
    let max = daily["Max"].as_u64().unwrap();
    let remaining = daily["Remaining"].as_u64().unwrap();
    assert!(remaining < max, "{daily}");
    assert!(limits.json()["DataStorageMB"]["Max"].is_u64());
    let again = env
        .get_bearer("/services/data/v62.0/limits/", &token)
        .await
        .json();
    assert!(
        again["DailyApiRequests"]["Remaining"].as_u64().unwrap() < remaining,
        "each REST call counts"
    );

    let global = env
        .get_bearer("/services/data/v62.0/sobjects", &token)
        .await;
    assert_eq!(global.status, 200, "{}", global.body);
    let global = global.json();
    assert_eq!(global["encoding"], "UTF-8");
    let account = global["sobjects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "Account")
        .unwrap()
        .clone();
    assert_eq!(account["keyPrefix"], "001");
    assert_eq!(account["queryable"], true);
    assert_eq!(
        account["urls"]["describe"],
        "/services/data/v62.0/sobjects/Account/describe"
    );

    let basic = env
        .get_bearer("/services/data/v62.0/sobjects/Account", &token)
        .await;
    assert_eq!(basic.status, 200, "{}", basic.body);
    assert_eq!(basic.json()["objectDescribe"]["name"], "Account");

    let describe = env
        .get_bearer("/services/data/v62.0/sobjects/contact/describe", &token)
        .await;
    assert_eq!(describe.status, 200, "{}", describe.body);
    let describe = describe.json();
    assert_eq!(describe["name"], "Contact");
    let fields = describe["fields"].as_array().unwrap();
    let account_id = fields.iter().find(|f| f["name"] == "AccountId").unwrap();
    assert_eq!(account_id["type"], "reference");
    assert_eq!(account_id["referenceTo"], json!(["Account"]));
    assert!(
        fields
            .iter()
            .any(|f| f["name"] == "Id" && f["type"] == "id")
    );

    let unknown = env
        .get_bearer("/services/data/v62.0/sobjects/Nope__c/describe", &token)
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body, NOT_FOUND);
    let dead = env
        .get_bearer("/services/data/v62.0/sobjects", "00Dnope!nope")
        .await;
    assert_eq!(dead.status, 401);
}
