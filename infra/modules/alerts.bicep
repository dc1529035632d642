// Monitoring as code: the action group the alerts notify, one log search alert
// per alert docs/operations.md describes, and the workbook charting the setup
// guide's four metrics. Every query is written once, in infra/queries/*.kql,
// and loaded here with loadTextContent; infra/monitoring_test.go checks that
// each event and field a query names is one the handler logs.
//
// Scope: the Log Analytics workspace behind Application Insights, where the
// handler's lines are AppTraces rows (docs/operations.md, "Where the logs are").
//
// API versions and property names (Azure/bicep-types-az, insights):
//   Microsoft.Insights/actionGroups@2023-01-01          groupShortName (max 12), emailReceivers
//   Microsoft.Insights/scheduledQueryRules@2023-12-01   kind LogAlert, criteria.allOf[].query/timeAggregation/operator/threshold
//   Microsoft.Insights/workbooks@2023-06-01             kind shared, name a GUID, serializedData, sourceId
// learn.microsoft.com/azure/templates/microsoft.insights/<version>/<type>

@description('Azure region of the alert rules and the workbook.')
param location string

@description('Tags for every resource.')
param tags object

@description('Short name the resource names derive from.')
param name string

@description('Resource ID of the Log Analytics workspace the queries run against.')
param workspaceId string

@description('Action group name.')
param actionGroupName string

@description('Email address the alerts go to. Empty: an action group without a receiver.')
param alertEmail string

@description('Display name of the workbook.')
param workbookDisplayName string

var emailReceivers = empty(alertEmail)
  ? []
  : [
      {
        name: 'on-call'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  // Action groups are global resources.
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'msconnector'
    enabled: true
    emailReceivers: emailReceivers
  }
}

// One entry per alert of docs/operations.md. Each query returns rows exactly
// when the alert condition holds, so every rule is "row count > 0" over its
// window; the window, not the query, bounds the time (no ago() in the files).
var alerts = [
  {
    key: 'configuration-failure'
    displayName: 'msconnector: configuration failure'
    description: 'A setting, a secret or the app registration is wrong: nobody can connect or refresh. docs/operations.md#configuration-failure'
    severity: 1
    frequency: 'PT5M'
    window: 'PT15M'
    query: loadTextContent('../queries/alert-configuration-failure.kql')
  }
  {
    key: 'refresh-failure-spike'
    displayName: 'msconnector: refresh failures spike'
    description: 'More than 20 % of token refreshes failed for a transient reason in 30 minutes. docs/operations.md#refresh-failures-spike'
    severity: 2
    frequency: 'PT15M'
    window: 'PT30M'
    query: loadTextContent('../queries/alert-refresh-failure-spike.kql')
  }
  {
    key: 'reconnect-required-growth'
    displayName: 'msconnector: reconnect_required grows'
    description: 'Many users were refused a refresh for good within an hour: a tenant-wide change. docs/operations.md#reconnect_required-grows'
    severity: 2
    frequency: 'PT15M'
    window: 'PT1H'
    query: loadTextContent('../queries/alert-reconnect-required-growth.kql')
  }
  {
    key: 'throttling'
    displayName: 'msconnector: throttled by Microsoft'
    description: 'Microsoft throttled token requests (429 or AADSTS50196). docs/operations.md#throttled-by-microsoft'
    severity: 2
    frequency: 'PT5M'
    window: 'PT15M'
    query: loadTextContent('../queries/alert-throttling.kql')
  }
  {
    key: 'no-sweep'
    displayName: 'msconnector: no refresh sweep for 30 minutes'
    description: 'The refresh timer has not finished a sweep in 30 minutes. docs/operations.md#no-sweep-for-30-minutes'
    severity: 2
    frequency: 'PT10M'
    window: 'PT30M'
    query: loadTextContent('../queries/alert-no-sweep.kql')
  }
  {
    key: 'secret-expiring'
    displayName: 'msconnector: a secret expires within 14 days'
    description: 'A Key Vault secret expires within 14 days or has expired: rotate it. docs/operations.md#secret-expires-within-14-days'
    severity: 2
    frequency: 'PT6H'
    // secret_expiring is logged once a day: a day's window always holds the last one.
    window: 'P1D'
    query: loadTextContent('../queries/alert-secret-expiring.kql')
  }
  {
    key: 'user-mismatch'
    displayName: 'msconnector: connect completed by another user (security)'
    description: 'oauth_failed with reason user_mismatch: a connect was completed by another CMS user than the one it was started for. docs/operations.md#user_mismatch-security'
    severity: 1
    frequency: 'PT5M'
    window: 'PT15M'
    query: loadTextContent('../queries/alert-user-mismatch.kql')
  }
  {
    key: 'webhook-dropped'
    displayName: 'msconnector: webhook delivery dropped'
    description: 'A webhook delivery was given up on after 24 hours; it is kept in the poison queue for replay. docs/operations.md#webhook-dropped'
    severity: 2
    frequency: 'PT5M'
    window: 'PT15M'
    query: loadTextContent('../queries/alert-webhook-dropped.kql')
  }
]

resource rules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [
  for alert in alerts: {
    name: '${name}-${alert.key}'
    location: location
    tags: tags
    kind: 'LogAlert'
    properties: {
      displayName: alert.displayName
      description: alert.description
      severity: alert.severity
      enabled: true
      evaluationFrequency: alert.frequency
      windowSize: alert.window
      scopes: [
        workspaceId
      ]
      criteria: {
        allOf: [
          {
            query: alert.query
            timeAggregation: 'Count'
            operator: 'GreaterThan'
            threshold: 0
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      // Resolved by itself once an evaluation finds no rows.
      autoMitigate: true
      actions: {
        actionGroups: [
          actionGroup.id
        ]
      }
    }
  }
]

// The workbook: one time chart per metric of the setup guide's monitoring list.
var charts = [
  {
    title: 'Failed OAuth attempts by reason (oauth_failed)'
    query: loadTextContent('../queries/workbook-oauth-failures.kql')
  }
  {
    title: 'Token refreshes by outcome and class (refreshed, refresh_failed)'
    query: loadTextContent('../queries/workbook-refresh-outcomes.kql')
  }
  {
    title: 'Connections by status (refresh_swept)'
    query: loadTextContent('../queries/workbook-connections.kql')
  }
  {
    title: 'Throttling (throttled)'
    query: loadTextContent('../queries/workbook-throttling.kql')
  }
]

var workbookContent = {
  version: 'Notebook/1.0'
  items: concat(
    [
      {
        type: 1
        name: 'intro'
        content: {
          json: '## MEGDocs Microsoft connector\nThe setup guide\'s four metrics, from the handler\'s log lines (AppTraces). docs/operations.md explains each one and its alert.'
        }
      }
    ],
    map(range(0, length(charts)), i => {
      type: 3
      name: 'chart-${i}'
      content: {
        version: 'KqlItem/1.0'
        query: charts[i].query
        title: charts[i].title
        size: 0
        queryType: 0
        resourceType: 'microsoft.operationalinsights/workspaces'
        visualization: 'timechart'
        timeContext: {
          // Seven days.
          durationMs: 604800000
        }
      }
    })
  )
  fallbackResourceIds: [
    workspaceId
  ]
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  // A workbook's name must be a GUID; this one is stable per resource group.
  name: guid(resourceGroup().id, 'msconnector-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: workbookDisplayName
    category: 'workbook'
    version: 'Notebook/1.0'
    sourceId: workspaceId
    serializedData: string(workbookContent)
  }
}

@description('Resource ID of the action group.')
output actionGroupId string = actionGroup.id

@description('Names of the log search alert rules.')
output alertRuleNames array = [for (alert, i) in alerts: rules[i].name]

@description('Resource ID of the workbook (open it in the portal: Monitor, Workbooks).')
output workbookId string = workbook.id
