#!/usr/bin/env python3
"""Writes a Marathon apps document at Marathon's ceiling (2,000 apps x 25 tasks = 50,000 tasks;
host, bridge and container networking; health results; named and IP VIPs), every agent a
loopback IP, to the path given (default big.json). Prints its size in bytes."""
import sys
import json
APPS=2000; T=25; AG=400
def agent(n): return f"127.{1+n//65536}.{(n//256)%256}.{n%256}"
def labels(i,p):
    m={}
    if i%10==0 and p==0: m["VIP_0"]=f"/svc/app{i}:80"
    if i%20==5 and p==0: m["VIP_0"]=f"10.200.{i//256}.{i%256}:443"
    return m
def task(i,t,ports,ip,h):
    u=f"{i:08x}-0000-4000-8000-{t:012x}"; app=f"svc_app{i}"
    return {"appId":f"/svc/app{i}","id":f"{app}.instance-{u}._app.1","host":agent((i*7+t*13)%AG),"ports":ports,"servicePorts":[],
      "ipAddresses":[{"ipAddress":ip,"protocol":"IPv4"}] if ip else [],
      "healthCheckResults":[{"alive":t%11!=0,"consecutiveFailures":0,"firstSuccess":"2021-03-01T10:00:20.000Z","lastFailure":None,"lastSuccess":"2021-03-01T10:05:00.000Z","lastFailureCause":None,"instanceId":f"{app}.instance-{u}"}] if h else [],
      "localVolumes":[],"slaveId":f"b1c2d3e4-0000-4000-8000-{t:012x}-S1","stagedAt":"2021-03-01T10:00:01.000Z","startedAt":"2021-03-01T10:00:05.000Z",
      "state":"TASK_KILLING" if t%50==49 else "TASK_RUNNING","version":"2021-03-01T10:00:00.000Z","role":"*"}
def app(i):
    h=i%3==0; sp=10000+i*3
    hp=lambda t,k: 20000+((i*31+t*7+k)%12000)
    r=i%20
    if r<=9: v={"id":f"/svc/app{i}","cmd":"./serve","networks":[{"mode":"host"}],"container":{"type":"MESOS","volumes":[]},
        "portDefinitions":[{"port":sp,"protocol":"tcp","name":"http","labels":labels(i,0)},{"port":sp+1,"protocol":"udp,tcp","name":"dns","labels":{}}],
        "requirePorts":False,"tasks":[task(i,t,[hp(t,0),hp(t,1)],None,h) for t in range(T)]}
    elif r<=14: v={"id":f"/svc/app{i}","networks":[{"mode":"container/bridge"}],"container":{"type":"DOCKER","docker":{"image":"nginx:1.19","forcePullImage":False,"parameters":[],"privileged":False},"volumes":[],
        "portMappings":[{"containerPort":80,"hostPort":0,"servicePort":sp,"protocol":"tcp","name":"web","labels":labels(i,0)}]},
        "tasks":[task(i,t,[hp(t,0)],"172.17.0.2",h) for t in range(T)]}
    else: v={"id":f"/svc/app{i}","networks":[{"mode":"container","name":"dcos"}],"container":{"type":"MESOS","volumes":[],"portMappings":[
        {"containerPort":8080,"hostPort":0,"servicePort":sp,"protocol":"tcp","name":"admin","labels":labels(i,0)},{"containerPort":9000,"servicePort":sp+1,"protocol":"tcp","name":"api","labels":{}}]},
        "tasks":[task(i,t,[hp(t,0)],f"9.{i//256%256}.{i%256}.{t}",h) for t in range(T)]}
    v.update({"instances":T,"cpus":0.1,"mem":128,"labels":{"HAPROXY_0_BALANCE":"leastconn","HAPROXY_GROUP":"external"} if i%4==0 else {},
      "healthChecks":[{"gracePeriodSeconds":300,"intervalSeconds":10,"maxConsecutiveFailures":3,"portIndex":0,"timeoutSeconds":5,"delaySeconds":15,"protocol":"MESOS_HTTP","path":"/health"}] if h else [],
      "version":"2021-03-01T10:00:00.000Z","upgradeStrategy":{"maximumOverCapacity":1,"minimumHealthCapacity":1},"tasksStaged":0,"tasksRunning":T,"deployments":[]})
    return v
b=json.dumps({"apps":[app(i) for i in range(APPS)]},separators=(',',':'))
open(sys.argv[1] if len(sys.argv) > 1 else "big.json","w").write(b); print(len(b))
